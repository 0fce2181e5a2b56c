"""Per-group learning rates: layer-wise decay and the head's multiplier, worked out by hand; a model's
no_weight_decay(); timm's own layer grouping; the ratios through every schedule; Muon's split and its resume."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import CONFIGS, composed
from trainer.build import build_model
from trainer.schema.model import ResNetConfig, SimpleCNNConfig, ViTConfig
from trainer.training.optim import create_optimizer, create_scheduler, load_optimizer_state
from trainer.training.param_groups import parameter_depths

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is the fastest

SCHEDULERS = sorted(path.stem for path in (CONFIGS / "scheduler").glob("*.yaml"))
LR = 0.1


class TinyViT(nn.Module):
    """A ViT's layout in miniature: a token on the model itself, a patch embedding, blocks, a norm, a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch_embed = nn.Linear(4, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 8))  # 2-D: only no_weight_decay() exempts it
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Linear(8, 8), nn.GELU()) for _ in range(2)))  # 2 blocks
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.patch_embed(x)) + self.cls_token))


def by_name(model: nn.Module, optimizer: torch.optim.Optimizer, key: str) -> dict[str, float]:
    """Each parameter's group `key` (lr, weight_decay), by parameter name."""
    of = {id(p): group[key] for group in optimizer.param_groups for p in group["params"]}
    return {name: of[id(p)] for name, p in model.named_parameters()}


def optimizer_for(model: nn.Module, option: str = "adamw", **values: object) -> torch.optim.Optimizer:
    cfg = composed(f"optim={option}", values={"optim.lr": LR, **{f"optim.{k}": v for k, v in values.items()}})
    return create_optimizer(cfg.optim, model)


def test_depths_walk_the_children_in_order_with_the_models_own_parameters_first() -> None:
    depths = parameter_depths(TinyViT())
    assert depths == {"cls_token": 0, "patch_embed.weight": 0, "patch_embed.bias": 0,
                      "blocks.0.0.weight": 1, "blocks.0.0.bias": 1, "blocks.1.0.weight": 2, "blocks.1.0.bias": 2,
                      "norm.weight": 3, "norm.bias": 3, "head.weight": 4, "head.bias": 4}


def project_model(schema: type, **values: object) -> nn.Module:
    return build_model(OmegaConf.structured(schema(in_channels=3, num_classes=10, **values)))


def torchvision_model(name: str, **values: object) -> nn.Module:
    import torchvision

    with torch.device("meta"):  # the layout alone: no memory, no initialisation
        return torchvision.models.get_model(name, weights=None, num_classes=10, **values)


RESNET18_BLOCKS = [6, 6, 9, 6, 9, 6, 9, 6]  # conv1, bn1, conv2, bn2 (+ a projection's conv and bn: stages 2-4)
# Parameters per depth, counted by hand: the depth unit is a block, not a layer.
BLOCK_DEPTHS = {
    # 4 x ConvNormAct (conv without bias, bn's weight and bias), then the linear head
    "simple_cnn": (lambda: project_model(SimpleCNNConfig, widths=[4] * 4), [3] * 4 + [2]),
    # the stem's conv and bn, each basic block, fc
    "resnet18": (lambda: project_model(ResNetConfig, stem="cifar", width=4), [3, *RESNET18_BLOCKS, 2]),
    "torchvision resnet18": (lambda: torchvision_model("resnet18"), [3, *RESNET18_BLOCKS, 2]),  # conv1, bn1 flat
    # patch_embed.proj (2), cls_token, pos_embed; per block norm1, qkv, proj, norm2, fc1, fc2 (2 each); norm; head
    "vit": (lambda: project_model(ViTConfig, image_size=8, patch_size=4, dim=6, depth=2, heads=2), [4, 12, 12, 2, 2]),
    # conv_proj (2), class_token, encoder.pos_embedding; 12 encoder layers (ln_1, attention's 4, ln_2, mlp's 4);
    # encoder.ln; the head
    "torchvision vit_b_16": (lambda: torchvision_model("vit_b_16", image_size=32), [4] + [12] * 12 + [2, 2]),
}


@pytest.mark.parametrize("model", sorted(BLOCK_DEPTHS))
def test_depths_are_the_blocks_of_the_projects_and_torchvisions_models(model: str) -> None:
    build, per_depth = BLOCK_DEPTHS[model]
    depths = parameter_depths(build())
    counts = Counter(depths.values())
    assert [counts[depth] for depth in range(len(counts))] == per_depth


def test_layer_decay_and_head_multiplier_give_the_lrs_worked_out_by_hand() -> None:
    """5 depths, layer_decay 0.5: depth d trains at 0.1 x 0.5^(4 - d); the head's 0.1 x 3."""
    model = TinyViT()
    optimizer = optimizer_for(model, layer_decay=0.5, head_lr_mult=3.0, weight_decay=0.05)
    by_hand = {"cls_token": 0.00625, "patch_embed": 0.00625, "blocks.0.0": 0.0125, "blocks.1.0": 0.025, "norm": 0.05,
               "head": 0.3}
    lrs = by_name(model, optimizer, "lr")
    assert lrs == pytest.approx({name: by_hand[name.rsplit(".", 1)[0] if "." in name else name] for name in lrs})
    assert all(group["lr"] == pytest.approx(LR * group["lr_scale"]) for group in optimizer.param_groups)
    assert len(optimizer.param_groups) == 5 + 1  # one per depth, and the undecayed cls_token beside patch_embed


def test_the_head_multiplier_alone_leaves_the_body_at_optim_lr() -> None:
    model = TinyViT()
    lrs = by_name(model, optimizer_for(model, head_lr_mult=10.0), "lr")
    assert {name: lr for name, lr in lrs.items() if name.startswith("head")} == pytest.approx(
        {"head.weight": 1.0, "head.bias": 1.0})
    assert all(lr == pytest.approx(LR) for name, lr in lrs.items() if not name.startswith("head"))


@pytest.mark.parametrize("no_decay_norm_bias", [False, True])
def test_no_weight_decay_names_never_decay(no_decay_norm_bias: bool) -> None:
    model = TinyViT()
    decay = by_name(model, optimizer_for(model, "sgd", weight_decay=0.05, layer_decay=0.75,
                                         no_decay_norm_bias=no_decay_norm_bias), "weight_decay")
    undecayed = {name for name, value in decay.items() if value == 0.0}
    norms_and_biases = {name for name in decay if name.endswith("bias") or name.startswith("norm")}
    assert undecayed == {"cls_token"} | (norms_and_biases if no_decay_norm_bias else set())
    assert all(value == 0.05 for name, value in decay.items() if name not in undecayed)


def test_a_timm_model_is_decayed_by_timms_own_layer_groups() -> None:
    """resnet10t: timm groups the stem, then each of its four one-block stages, then the head: 6 depths."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", num_classes=10)
    lrs = by_name(model, optimizer_for(model, layer_decay=0.5), "lr")
    assert [lrs["conv1.0.weight"], lrs["bn1.weight"]] == pytest.approx([LR * 0.5 ** 5] * 2)
    for stage in range(1, 5):
        assert lrs[f"layer{stage}.0.conv1.weight"] == pytest.approx(LR * 0.5 ** (5 - stage))
    assert lrs["fc.weight"] == lrs["fc.bias"] == pytest.approx(LR)
    assert len({round(lr, 12) for lr in lrs.values()}) == 6


@pytest.mark.parametrize("warmup", [0, 3])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_keeps_the_groups_lr_ratios(scheduler: str, warmup: int) -> None:
    """Every group's lr over its lr_scale is one lr, batch after batch, behind a warm-up or not (onecycle's max_lr
    is per group)."""
    model = TinyViT()
    optimizer = optimizer_for(model, "sgd", layer_decay=0.5, head_lr_mult=2.0)
    cfg = composed(f"scheduler={scheduler}", "optim=sgd",
                   values={"scheduler.warmup_epochs": 0, "scheduler.warmup_steps": warmup, "trainer.max_epochs": 6})
    schedule = create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=2, max_epochs=6)
    seen = set()
    for batch in range(12):
        unscaled = [group["lr"] / group["lr_scale"] for group in optimizer.param_groups]
        assert unscaled == pytest.approx([unscaled[0]] * len(unscaled)), batch
        seen.add(round(unscaled[0], 12))
        optimizer.step()
        schedule.step_batch()
        if batch % 2 == 1:
            schedule.step_epoch(val_loss=1.0)  # a stalled loss: plateau cuts too
    assert len({group["lr_scale"] for group in optimizer.param_groups}) == 5
    assert len(seen) > 1 or scheduler == "none"  # the schedule moved the lr


# ---- optim=muon: torch's Muon on the hidden matrices, AdamW on the rest, as one optimizer

def mlp_with_a_norm() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU(),
                         nn.Linear(16, 16), nn.Linear(16, 3))


def test_muon_steps_the_hidden_matrices_and_adamw_the_rest() -> None:
    model = mlp_with_a_norm()
    optimizer = optimizer_for(model, "muon", no_decay_norm_bias=True, adamw_lr_ratio=0.5)
    muon, adamw = optimizer.inner
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert optimizer.param_groups == muon.param_groups + adamw.param_groups  # the same dicts: schedulers set both
    assert {id(p) for g in muon.param_groups for p in g["params"]} == {id(model[2].weight), id(model[5].weight)}
    assert all(g["fused"] for g in adamw.param_groups)  # the fused AdamW kernel
    assert {g["lr"] for g in muon.param_groups} == {LR} and {g["lr"] for g in adamw.param_groups} == {LR / 2}


def test_a_resumed_muon_takes_the_same_next_step() -> None:
    """Three steps, a checkpoint (weights-only), then one more step from it: the weights of a run that never
    stopped, exactly."""
    inputs, targets = torch.randn(16, 6, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3

    def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    model = mlp_with_a_norm()
    optimizer = optimizer_for(model, "muon", no_decay_norm_bias=True)
    for _ in range(3):
        step(model, optimizer)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    step(model, optimizer)

    resumed = mlp_with_a_norm()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = optimizer_for(resumed, "muon", no_decay_norm_bias=True)
    load_optimizer_state(resumed_optimizer, checkpoint["optimizer"])
    step(resumed, resumed_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters(), strict=True))
    assert resumed_optimizer.inner[0].state is resumed_optimizer.state  # the loaded state is the inner ones'
    assert all(g["fused"] for g in resumed_optimizer.inner[1].param_groups)
