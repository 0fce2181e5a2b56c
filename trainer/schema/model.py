"""Schemas of the `model` group; every model reads `in_channels` and `num_classes` from the data config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, SI, DictConfig, OmegaConf

from trainer.errors import ConfigError
from trainer.models import catalog
from trainer.schema.checks import require
from trainer.schema.run import CKPT_MODES

# The names the models implement, from their torch-free catalog (validation never imports torch).
ACTIVATION_NAMES = tuple(catalog.ACTIVATIONS)
NORMS = catalog.NORMS
RESNET_DEPTHS = tuple(catalog.RESNET_STAGES)
VGG_DEPTHS = tuple(catalog.VGG_LAYERS)
EFFICIENTNET_VARIANTS = tuple(catalog.EFFICIENTNET_VARIANTS)


def one_of(names: tuple[object, ...]) -> str:
    """The requirement text of a choice among `names`: "one of a, b, c"."""
    return "one of " + ", ".join(map(str, names))


def require_widths(widths: list[int]) -> None:
    """`widths` of a stack of blocks (simple_cnn, airbench): at least one, each > 0."""
    require(len(widths) > 0 and all(w > 0 for w in widths), "widths", "non-empty, all > 0", widths)


# The model keys that say how a training run starts and trains its model, not what the model is: build_model does
# not pass them to the model's builder, and eval, predict and export (built from a checkpoint) ignore them.
RUN_ONLY_KEYS = ("init_from", "freeze", "whiten_init")
# The model keys that name where a fresh model's pretrained weights come from (a local file): a model
# rebuilt from a checkpoint (eval, predict, export) takes the checkpoint's weights, so they are reset to null there.
WEIGHT_SOURCE_KEYS = ("pretrained_file",)


@dataclass
class ModelConfig:
    """Every model takes its input channels and class count from the data config.

    Each schema below holds its family's defaults: an option file (configs/model/<option>.yaml) names its
    schema and sets only what makes it that option (resnet50.yaml: depth 50).
    """

    _target_: str = MISSING
    in_channels: int = SI("${data.in_channels}")
    num_classes: int = SI("${data.num_classes}")
    # Fine-tuning, for training runs (RUN_ONLY_KEYS): a local checkpoint, .pt/.pth state_dict or .safetensors
    # file to start from (tensors of another shape, such as a head for other classes, keep a fresh initialisation)
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)  # module-name prefixes that do not train (stem, stages.0)

    def min_image_size(self) -> int:
        """The smallest data.image_size this model can use (its stages: trainer/models/catalog.py)."""
        return 1

    def label(self) -> str:
        """The model as the error line names it."""
        return self._target_.rsplit(".", 1)[-1]


@dataclass
class MLPConfig(ModelConfig):
    """`model=mlp`: a multi-layer perceptron on flattened pixels."""

    _target_: str = "trainer.models.mlp.MLP"
    image_size: int = SI("${data.image_size}")
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 128])
    act: str = "relu"  # relu, leaky_relu, elu, gelu, silu (swish), sigmoid, tanh, none
    dropout: float = 0.1  # after each hidden layer

    def __post_init__(self) -> None:
        require(self.act in ACTIVATION_NAMES, "act", one_of(ACTIVATION_NAMES), self.act)
        require(all(h > 0 for h in self.hidden_sizes), "hidden_sizes", "all > 0", self.hidden_sizes)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class SimpleCNNConfig(ModelConfig):
    """`model=simple_cnn`: conv-norm-act blocks, each followed by 2x2 max pooling; global average pool, linear head."""

    _target_: str = "trainer.models.simple_cnn.SimpleCNN"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # one block per width
    act: str = "relu"  # relu, leaky_relu, elu, gelu, silu (swish), sigmoid, tanh, none
    norm: str = "batch"  # batch, group, layer, none
    dropout: float = 0.0  # before the linear head
    spatial_dropout: float = 0.0  # Dropout2d after each block: drops whole feature maps

    def __post_init__(self) -> None:
        require(self.act in ACTIVATION_NAMES, "act", one_of(ACTIVATION_NAMES), self.act)
        require(self.norm in NORMS, "norm", one_of(NORMS), self.norm)
        require(0.0 <= self.spatial_dropout < 1.0, "spatial_dropout", "in [0, 1)", self.spatial_dropout)
        require_widths(self.widths)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)

    def min_image_size(self) -> int:
        return catalog.simple_cnn_min_size(len(self.widths))

    def label(self) -> str:
        return f"simple_cnn with {len(self.widths)} blocks"


@dataclass
class ResNetConfig(ModelConfig):
    """The ResNet family (`model=resnet18` ... `resnet152`): each option sets its `depth`."""

    _target_: str = "trainer.models.resnet.ResNet"
    depth: int = 18  # 18, 34, 50, 101, 152
    stem: str = "imagenet"  # imagenet (7x7/2 conv + max-pool) or cifar (3x3/1 conv, no pool; for 32-px images)
    width: int = 64  # channels of the first stage; each later stage doubles them
    zero_init_residual: bool = False  # true: each block's last norm starts at 0, so every block is the identity

    def __post_init__(self) -> None:
        require(self.depth in RESNET_DEPTHS, "depth", one_of(RESNET_DEPTHS), self.depth)
        require(self.stem in catalog.RESNET_STEMS, "stem", " or ".join(catalog.RESNET_STEMS), self.stem)
        require(self.width > 0, "width", "> 0", self.width)

    def min_image_size(self) -> int:
        return catalog.resnet_min_size(self.stem)

    def label(self) -> str:
        return f"resnet{self.depth} with model.stem={self.stem}"


@dataclass
class VGGConfig(ModelConfig):
    """The VGG family (`model=vgg11` ... `vgg19`): 3x3 conv stacks and five max-pools, then a 3-layer
    classifier; each option sets its `depth`."""

    _target_: str = "trainer.models.vgg.VGG"
    depth: int = 16  # 11, 13, 16, 19
    batch_norm: bool = False  # true: BatchNorm after each conv
    dropout: float = 0.5
    classifier_width: int = 4096  # 4096 in the paper; smaller widths make 32-px experiments cheap
    pool_size: int = 7  # the features are average-pooled to pool_size x pool_size before the classifier

    def __post_init__(self) -> None:
        require(self.depth in VGG_DEPTHS, "depth", one_of(VGG_DEPTHS), self.depth)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(self.classifier_width > 0, "classifier_width", "> 0", self.classifier_width)
        require(self.pool_size > 0, "pool_size", "> 0", self.pool_size)

    def min_image_size(self) -> int:
        return catalog.vgg_min_size(self.depth)

    def label(self) -> str:
        return f"vgg{self.depth}"


@dataclass
class GoogLeNetConfig(ModelConfig):
    """`model=googlenet`: Inception v1."""

    _target_: str = "trainer.models.googlenet.GoogLeNet"
    aux_logits: bool = False  # true: the two auxiliary classifiers (training only, loss weight 0.3)
    dropout: float = 0.2
    branch5x5_kernel: int = 5  # 5 as in the paper; 3 reproduces torchvision's layout (6,624,904 parameters)

    def __post_init__(self) -> None:
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(self.branch5x5_kernel in (3, 5), "branch5x5_kernel", "3 or 5", self.branch5x5_kernel)

    def min_image_size(self) -> int:
        return catalog.googlenet_min_size()

    def label(self) -> str:
        return "googlenet"


@dataclass
class EfficientNetConfig(ModelConfig):
    """The EfficientNet family (`model=efficientnet_b0` ... `b7`): MBConv + squeeze-excitation, B0 scaled by
    the published coefficients; each option sets its `variant`."""

    _target_: str = "trainer.models.efficientnet.EfficientNet"
    variant: str = "b0"  # b0 ... b7
    phi: float | None = None  # scale B0 by the compound rule instead (depth 1.2^phi, width 1.1^phi, res. 1.15^phi)
    stochastic_depth: float = 0.2  # drop-path rate of the last block; it grows linearly from 0 over the blocks
    dropout: float | None = None  # before the classifier; null: the variant's published dropout

    def __post_init__(self) -> None:
        require(self.variant in EFFICIENTNET_VARIANTS, "variant", one_of(EFFICIENTNET_VARIANTS), self.variant)
        require(self.phi is None or self.phi >= 0, "phi", ">= 0 or null", self.phi)
        require(0.0 <= self.stochastic_depth < 1.0, "stochastic_depth", "in [0, 1)", self.stochastic_depth)
        require(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "in [0, 1) or null", self.dropout)

    def min_image_size(self) -> int:
        return catalog.efficientnet_min_size()  # phi and the variants scale width and depth, not the strides

    def label(self) -> str:
        return f"efficientnet_{self.variant}" if self.phi is None else f"efficientnet_b0 with model.phi={self.phi}"


@dataclass
class AirbenchConfig(ModelConfig):
    """`model=airbench`: the CIFAR-10 speed-record network (trainer/models/airbench.py): a frozen 2x2 patch-whitening
    conv, conv-pool-BN-GELU groups of `widths`, a global max-pool and a bias-free head scaled by `logit_scale`."""

    _target_: str = "trainer.models.airbench.Airbench"
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])  # one conv group (and 2x2 max-pool) each
    whiten_kernel: int = 2  # the whitening conv's patch side: 2 * in_channels * whiten_kernel^2 filters
    whiten_init: bool = True  # a training run sets the whitening filters from its first training images
    bn_momentum: float = 0.4  # torch's BatchNorm momentum (airbench's 0.6 is 1 - 0.4)
    logit_scale: float = 1 / 9  # the head's outputs are multiplied by it
    act: str = "gelu"  # relu, leaky_relu, elu, gelu, silu (swish), sigmoid, tanh, none

    def __post_init__(self) -> None:
        require(self.act in ACTIVATION_NAMES, "act", one_of(ACTIVATION_NAMES), self.act)
        require_widths(self.widths)
        require(self.whiten_kernel >= 1, "whiten_kernel", ">= 1", self.whiten_kernel)
        require(0.0 < self.bn_momentum <= 1.0, "bn_momentum", "in (0, 1]", self.bn_momentum)
        require(self.logit_scale > 0, "logit_scale", "> 0", self.logit_scale)

    def min_image_size(self) -> int:
        return catalog.airbench_min_size(len(self.widths), self.whiten_kernel)

    def label(self) -> str:
        return f"airbench with {len(self.widths)} conv groups"


@dataclass
class TorchvisionConfig(ModelConfig):
    """`model=torchvision`: any torchvision.models builder by name, adapted to the data's channels and classes."""

    _target_: str = "trainer.models.torchvision_model.build"
    image_size: int = SI("${data.image_size}")
    name: str = "resnet18"  # convnext_tiny | vit_b_16 | mobilenet_v3_small | regnet_y_400mf ...
    weights: str | None = None  # null: random init; or a weights name (DEFAULT, IMAGENET1K_V1...) in torch's hub cache
    kwargs: Any = None  # null, or a dict of the builder's own arguments: {dropout: 0.2} (see check_kwargs)

    def __post_init__(self) -> None:
        check_kwargs(self.kwargs, catalog.TORCHVISION_SET_BY_KEYS)

    def label(self) -> str:
        return f"torchvision {self.name}"  # its minimum is torchvision's to know: not checked here


@dataclass
class ViTConfig(ModelConfig):
    """`model=vit`: a Vision Transformer; the defaults are timm's vit_tiny with 4-px patches for 32-px images."""

    _target_: str = "trainer.models.vit.VisionTransformer"
    image_size: int = SI("${data.image_size}")
    patch_size: int = 4  # must divide data.image_size: (image_size / patch_size)^2 tokens
    dim: int = 192  # token width
    depth: int = 12  # transformer blocks
    heads: int = 3  # attention heads; must divide dim
    mlp_ratio: float = 4.0  # each block's MLP is mlp_ratio x dim wide
    pool: str = "cls"  # cls (a class token) or mean (the mean of the patch tokens) feeds the head
    stochastic_depth: float = 0.1  # the last block's drop-path rate; it grows linearly from 0 over the blocks
    dropout: float = 0.0  # after the position embedding, attention (weights and output) and each MLP layer

    def __post_init__(self) -> None:
        for key in ("patch_size", "dim", "depth", "heads"):
            require(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        require(self.dim % self.heads == 0, "heads", f"a divisor of model.dim ({self.dim})", self.heads)
        if isinstance(self.image_size, int):
            require(self.image_size % self.patch_size == 0, "patch_size",
                    f"a divisor of data.image_size ({self.image_size})", self.patch_size)
        require(self.mlp_ratio > 0, "mlp_ratio", "> 0", self.mlp_ratio)
        require(self.pool in catalog.VIT_POOLS, "pool", one_of(catalog.VIT_POOLS), self.pool)
        require(0.0 <= self.stochastic_depth < 1.0, "stochastic_depth", "in [0, 1)", self.stochastic_depth)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)

    def label(self) -> str:
        return f"vit with model.patch_size={self.patch_size}"


@dataclass
class RNNConfig(ModelConfig):
    """`model=rnn`: an LSTM or GRU that reads the image row by row (sequence length: the image height; features
    per step: width x channels) and classifies from its final state."""

    _target_: str = "trainer.models.rnn.RowRNN"
    image_size: int = SI("${data.image_size}")
    cell: str = "lstm"  # lstm or gru
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False  # true: a second direction reads the rows bottom-up; the head sees both
    dropout: float = 0.0  # between stacked layers (with num_layers > 1)

    def __post_init__(self) -> None:
        require(self.cell in catalog.RNN_CELLS, "cell", one_of(catalog.RNN_CELLS), self.cell)
        require(self.hidden_size >= 1, "hidden_size", ">= 1", self.hidden_size)
        require(self.num_layers >= 1, "num_layers", ">= 1", self.num_layers)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)

    def label(self) -> str:
        return f"rnn ({self.cell})"


@dataclass
class TimmConfig(ModelConfig):
    """`model=timm`: any timm model by name, adapted to the data's channels and classes; weights only from a
    local file."""

    _target_: str = "trainer.models.timm_model.build"
    image_size: int = SI("${data.image_size}")  # models with a fixed input size (ViTs) are built for it
    name: str = "resnet10t"  # any timm.list_models() name: convnext_atto | vit_tiny_patch16_224 | efficientnet_b0 ...
    kwargs: Any = None  # null, or a dict of more timm.create_model arguments: {drop_path_rate: 0.1, img_size: 64}
    pretrained_file: str | None = None  # null: random init; or a local .pth/.safetensors file of timm weights
    dropout: float | None = None  # timm's drop_rate (before the classifier); null: the model's default
    stochastic_depth: float | None = None  # timm's drop_path_rate; null: the model's default

    def __post_init__(self) -> None:
        kwargs = check_kwargs(self.kwargs, catalog.TIMM_SET_BY_KEYS)
        for key, arg in catalog.TIMM_RATES.items():
            value = getattr(self, key)
            require(value is None or 0.0 <= value < 1.0, key, "in [0, 1) or null", value)
            require(value is None or arg not in kwargs, f"kwargs.{arg}",
                    f"left out when model.{key} is set (both set timm's {arg})", kwargs.get(arg))
            rate = kwargs.get(arg)  # some timm models check it only at their first forward
            require(rate is None or (isinstance(rate, int | float) and 0.0 <= rate < 1.0), f"kwargs.{arg}",
                    "in [0, 1)", rate)

    def label(self) -> str:
        return f"timm {self.name}"  # its minimum is timm's to know: not checked here


def check_kwargs(kwargs: Any, set_by: dict[str, str]) -> dict[str, Any]:
    """`model.kwargs` as a dict ({} for null), refusing a builder argument that a config key already sets.

    The key is typed `Any` with a null default rather than an empty dict: `model.kwargs={a: 1}` then replaces
    the null, where a typed dict would refuse the new key `a`; add a key to a set dict with `+model.kwargs.b=2`.
    """
    require(kwargs is None or isinstance(kwargs, dict), "kwargs", "a dict of keyword arguments or null", kwargs)
    kwargs = kwargs or {}
    for arg, key in set_by.items():
        require(arg not in kwargs, f"kwargs.{arg}", f"left out (it is set by {key})", kwargs.get(arg))
    return kwargs


SCHEMAS = {"mlp": MLPConfig, "simple_cnn": SimpleCNNConfig, "resnet": ResNetConfig, "vgg": VGGConfig,
           "googlenet": GoogLeNetConfig, "efficientnet": EfficientNetConfig, "torchvision": TorchvisionConfig,
           "vit": ViTConfig, "rnn": RNNConfig, "timm": TimmConfig, "airbench": AirbenchConfig}


def check_input_size(cfg: DictConfig) -> None:
    """Refuse a data.image_size below the smallest input the chosen model can use (a ConfigError naming both).

    Runs on the composed root config, after each group is valid; a mode that builds its model from a
    checkpoint (eval, predict, export) is not checked against the composed model.
    """
    if cfg.get("mode") in CKPT_MODES or not OmegaConf.is_dict(cfg.get("model")) or not OmegaConf.is_dict(
            cfg.get("data")):
        return
    model: Any = OmegaConf.to_object(cfg.model)
    image_size = cfg.data.get("image_size")
    if not isinstance(model, ModelConfig) or not isinstance(image_size, int):
        return
    minimum = model.min_image_size()
    if image_size < minimum:
        raise ConfigError(f"invalid config: {model.label()} needs data.image_size >= {minimum} (got {image_size}): "
                          "a smaller input shrinks its feature maps to 1 px before its last stage")
