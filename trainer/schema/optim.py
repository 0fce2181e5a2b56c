"""Schemas of the `optim` group: torch and timm optimizer classes, instantiated partially."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from trainer.schema.checks import require

LR_SCALINGS = ("linear", "sqrt")  # optim.scale_lr_with_batch
# Keys of every optim option that are the trainer's, not the optimizer class's: they shape the parameter groups
# and the lr, and never reach the class.
TRAINER_KEYS = ("no_decay_norm_bias", "layer_decay", "head_lr_mult", "norm_bias_lr_mult", "scale_lr_with_batch",
                "base_batch_size")


@dataclass
class OptimConfig:
    """An optimizer class, instantiated partially and then called with the parameter groups.

    The keys of TRAINER_KEYS are ours, not the class's. `no_decay_norm_bias` true puts biases and normalisation
    weights (every 1-D parameter) in groups with weight_decay 0; the names a model's `no_weight_decay()` returns
    (timm's convention: a ViT's pos_embed) never decay either way. `layer_decay` gives a parameter at depth d of a
    model's L depths (its stem, each block, its head: trainer/training/param_groups.py) the lr x
    layer_decay^(L-1-d) (BEiT's layer-wise decay: the head keeps optim.lr, the stem gets the least);
    `head_lr_mult` multiplies the head's lr. `norm_bias_lr_mult` (BatchNorm bias scaling, airbench's 64) multiplies
    the lr of normalisation layers' biases and divides their weight decay by as much, so that lr x decay stays the
    same. `scale_lr_with_batch` sets optim.lr, at the start of a run, to optim.lr x (global batch / base_batch_size)
    (`linear`) or its square root (`sqrt`).
    """

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0
    no_decay_norm_bias: bool = False  # true: biases and norm weights (1-D parameters) get no weight decay
    layer_decay: float | None = None  # e.g. 0.75: each depth below the head trains at 0.75x the lr above it
    head_lr_mult: float | None = None  # e.g. 10: the classifier head trains at 10x the lr (null: 1x)
    norm_bias_lr_mult: float | None = None  # e.g. 64: norm-layer biases train at 64x the lr, decay / 64 (null: 1x)
    scale_lr_with_batch: str | None = None  # null | linear | sqrt: optim.lr is the lr at base_batch_size
    base_batch_size: int = 256  # the global batch optim.lr is meant for, with scale_lr_with_batch

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(self.layer_decay is None or 0 < self.layer_decay <= 1, "layer_decay", "in (0, 1] or null",
                self.layer_decay)
        require(self.head_lr_mult is None or self.head_lr_mult > 0, "head_lr_mult", "> 0 or null", self.head_lr_mult)
        require(self.norm_bias_lr_mult is None or self.norm_bias_lr_mult > 0, "norm_bias_lr_mult", "> 0 or null",
                self.norm_bias_lr_mult)
        require(self.scale_lr_with_batch in (None, *LR_SCALINGS), "scale_lr_with_batch",
                " or ".join(["null", *LR_SCALINGS]), self.scale_lr_with_batch)
        require(self.base_batch_size >= 1, "base_batch_size", ">= 1", self.base_batch_size)


def require_betas(betas: list[float]) -> None:
    require(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), "betas", "two values in [0, 1)", betas)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False  # true: Nesterov momentum
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)
        require(not self.nesterov or self.momentum > 0, "nesterov", "false when momentum is 0", self.nesterov)


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    lr: float = 1e-3
    alpha: float = 0.99  # smoothing of the squared-gradient average
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.alpha < 1.0, "alpha", "in [0, 1)", self.alpha)
        require(self.eps > 0, "eps", "> 0", self.eps)
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)


@dataclass
class AdaptiveConfig(OptimConfig):
    """The Adam family's moment averages: `betas` and the denominator's `eps`."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        require_betas(self.betas)
        require(self.eps > 0, "eps", "> 0", self.eps)


@dataclass
class AdamConfig(AdaptiveConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    """Adam with decoupled weight decay: the decay does not pass through the adaptive scaling."""

    _target_: str = "torch.optim.AdamW"
    lr: float = 3e-3
    weight_decay: float = 0.01


@dataclass
class NAdamConfig(AdaptiveConfig):
    """Adam with Nesterov momentum (torch.optim.NAdam); `decoupled_weight_decay` true: NAdamW."""

    _target_: str = "torch.optim.NAdam"
    lr: float = 2e-3
    momentum_decay: float = 4e-3  # psi: how fast the momentum schedule approaches beta1
    decoupled_weight_decay: bool = False  # true: AdamW's decay, not L2 added to the gradient

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.momentum_decay >= 0, "momentum_decay", ">= 0", self.momentum_decay)


@dataclass
class RAdamConfig(AdaptiveConfig):
    """Rectified Adam (torch.optim.RAdam): no adaptive step until the variance estimate is reliable."""

    _target_: str = "torch.optim.RAdam"
    lr: float = 1e-3
    decoupled_weight_decay: bool = False  # true: AdamW's decay, not L2 added to the gradient


@dataclass
class LionConfig(OptimConfig):
    """Lion (timm.optim.Lion): the sign of an interpolated momentum; use ~3-10x less lr and more weight decay
    than AdamW (the decay is decoupled)."""

    _target_: str = "timm.optim.Lion"
    lr: float = 3e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    caution: bool = False  # true: mask the update where its sign disagrees with the gradient's (C-Lion)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_betas(self.betas)


@dataclass
class LambConfig(AdaptiveConfig):
    """LAMB (timm.optim.Lamb): Adam with a per-layer trust ratio, for large batches."""

    _target_: str = "timm.optim.Lamb"
    lr: float = 3e-3
    weight_decay: float = 0.01
    eps: float = 1e-6
    max_grad_norm: float | None = 1.0  # the global gradient norm is clipped to this first (null: not clipped)
    trust_clip: bool = False  # true: the trust ratio is clipped to at most 1
    always_adapt: bool = False  # true: also adapt the lr of groups without weight decay
    caution: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "> 0 or null",
                self.max_grad_norm)


@dataclass
class LarsConfig(OptimConfig):
    """LARS (timm.optim.Lars): SGD whose step on each parameter is scaled by trust_coeff x |w| / |g|, for large
    batches; groups without weight decay take plain SGD steps unless `always_adapt`."""

    _target_: str = "timm.optim.Lars"
    lr: float = 1.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    trust_coeff: float = 1e-3
    eps: float = 1e-8
    trust_clip: bool = False  # true: LARC, the trust ratio clipped to at most 1
    always_adapt: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)
        require(not self.nesterov or self.momentum > 0, "nesterov", "false when momentum is 0", self.nesterov)
        require(self.trust_coeff > 0, "trust_coeff", "> 0", self.trust_coeff)


MUON_LR_ADJUSTMENTS = ("original", "match_rms_adamw", "spectral_unclamped")


@dataclass
class MuonConfig(AdamWConfig):
    """Muon (torch.optim.Muon: momentum orthogonalised by Newton-Schulz) on the hidden 2-D weight matrices, AdamW
    (this schema's AdamW keys) on every other parameter: the first layer, the head, biases, norms, embeddings and
    every weight that is not 2-D (torch's Muon takes matrices only; conv kernels stay with AdamW).

    With the default `adjust_lr_fn: match_rms_adamw` Muon's steps have AdamW's size, so one lr and weight decay
    serve both; `original` (Keller Jordan's scaling) wants a ~10x larger lr: then set `adamw_lr_ratio` ~0.1.
    """

    _target_: str = "trainer.training.muon.Muon"
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5  # Newton-Schulz iterations
    adjust_lr_fn: str = "match_rms_adamw"  # original | match_rms_adamw | spectral_unclamped
    adamw_lr_ratio: float = 1.0  # the AdamW part's lr, as a multiple of optim.lr

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)
        require(self.ns_steps >= 1, "ns_steps", ">= 1", self.ns_steps)
        require(self.adjust_lr_fn in MUON_LR_ADJUSTMENTS, "adjust_lr_fn", " or ".join(MUON_LR_ADJUSTMENTS),
                self.adjust_lr_fn)
        require(self.adamw_lr_ratio > 0, "adamw_lr_ratio", "> 0", self.adamw_lr_ratio)


SCHEMAS = {"sgd": SGDConfig, "rmsprop": RMSpropConfig, "adam": AdamConfig, "adamw": AdamWConfig, "nadam": NAdamConfig,
           "radam": RAdamConfig, "lion": LionConfig, "lamb": LambConfig, "lars": LarsConfig, "muon": MuonConfig}
