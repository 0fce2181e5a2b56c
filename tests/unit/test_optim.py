"""Optimizer options: defaults, the no-decay parameter groups, fused kernels, one training step each; Muon."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import CONFIGS, REPO, compose, composed, convnet, run_cli_in_process
from trainer.errors import ConfigError
from trainer.schema import validate
from trainer.schema.optim import MuonConfig
from trainer.training.muon import Muon
from trainer.training.optim import (
    create_optimizer,
    fast_kernel_kwargs,
    load_optimizer_state,
    lr_batch_factor,
    scale_lr_with_batch,
)
from trainer.training.param_groups import parameter_groups

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is the fastest

OPTIMS = sorted(path.stem for path in (CONFIGS / "optim").glob("*.yaml"))
FUSED = {"sgd", "adam", "adamw", "muon"}  # torch has a fused kernel for these (muon: its AdamW part)


def every_kind_convnet() -> nn.Module:
    """Every kind of parameter: conv and linear weights, biases, BatchNorm, GroupNorm and a 2-D LayerNorm."""
    return convnet(1, 3, width=4, every_parameter_kind=True)


def exempt_params(model: nn.Module) -> set[int]:
    """Biases and every parameter of a norm layer, by name: what no_decay_norm_bias must leave undecayed."""
    norms = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    return {id(p) for module in model.modules() for name, p in module.named_parameters(recurse=False)
            if name == "bias" or isinstance(module, norms)}


def test_the_readme_documents_every_option_and_the_default_that_builds() -> None:
    """README's config-group table lists exactly the option files, and the one it marks (default) is the optimizer
    a run without `optim=` builds."""
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `optim` |"))
    options_cell = row.split(" | ")[1]
    assert sorted(re.findall(r"`(\w+)`", options_cell)) == OPTIMS
    (default,) = re.findall(r"`(\w+)` \(default\)", options_cell)
    cfg = compose()
    validate(cfg)
    assert type(create_optimizer(cfg.optim, every_kind_convnet())).__name__.lower() == default


@pytest.mark.parametrize(("option", "expected"), [
    ("sgd", {"momentum": 0.9, "nesterov": False}),
    ("rmsprop", {"alpha": 0.99}),
    ("adam", {"betas": (0.9, 0.999), "eps": 1e-8, "lr": 1e-3, "weight_decay": 0.0}),
    ("adamw", {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}),
    ("nadam", {"lr": 2e-3, "momentum_decay": 4e-3, "decoupled_weight_decay": False}),
    ("radam", {"lr": 1e-3, "decoupled_weight_decay": False}),
    ("lion", {"lr": 3e-4, "betas": (0.9, 0.99), "weight_decay": 0.1}),
    ("lamb", {"lr": 3e-3, "eps": 1e-6, "max_grad_norm": 1.0, "weight_decay": 0.01}),
    ("lars", {"lr": 1.0, "momentum": 0.9, "trust_coeff": 1e-3, "weight_decay": 1e-4}),
    ("muon", {"lr": 3e-3, "betas": (0.9, 0.999), "weight_decay": 0.01}),  # its AdamW part: no hidden matrices
])
def test_defaults(option: str, expected: dict) -> None:
    cfg = composed(f"optim={option}")
    optimizer = create_optimizer(cfg.optim, every_kind_convnet())
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), key


def test_muon_takes_every_setting_from_its_schema() -> None:
    """Muon has no defaults of its own to drift from MuonConfig's: each setting is required and a schema key
    (fused and foreach, the kernel choice, are torch's)."""
    parameters = inspect.signature(Muon).parameters
    settings = [name for name in parameters if name not in ("params", "fused", "foreach")]
    assert [name for name in settings if parameters[name].default is not inspect.Parameter.empty] == []
    assert set(settings) <= {field.name for field in dataclasses.fields(MuonConfig)}


def test_sgd_nesterov_option_reaches_torch() -> None:
    cfg = compose("optim=sgd", "optim.nesterov=true")
    validate(cfg)
    assert create_optimizer(cfg.optim, every_kind_convnet()).param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("option", OPTIMS)
def test_no_decay_norm_bias_puts_biases_and_norms_in_a_zero_decay_group(option: str) -> None:
    cfg = composed(f"optim={option}", values={"optim.weight_decay": 0.05, "optim.no_decay_norm_bias": True})
    model = every_kind_convnet()
    optimizer = create_optimizer(cfg.optim, model)
    decay, no_decay = optimizer.param_groups  # muon too: this model has no hidden matrices, all AdamW's
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in no_decay["params"]} == exempt_params(model)
    assert {id(p) for p in decay["params"]} == {id(p) for p in model.parameters()} - exempt_params(model)
    assert all(p.ndim > 1 for p in decay["params"])
    assert decay["lr"] == no_decay["lr"] == cfg.optim.lr


@pytest.mark.parametrize("option", OPTIMS)
def test_without_the_flag_every_parameter_decays(option: str) -> None:
    cfg = composed(f"optim={option}", values={"optim.weight_decay": 0.05})
    model = every_kind_convnet()
    (group,) = create_optimizer(cfg.optim, model).param_groups
    assert group["weight_decay"] == 0.05 and len(group["params"]) == len(list(model.parameters()))


def test_exempt_parameters_are_not_decayed_by_a_step() -> None:
    """With zero gradients an AdamW step is pure decoupled decay: only the decay group moves."""
    cfg = compose("optim=adamw", "optim.weight_decay=0.5", "optim.no_decay_norm_bias=true")
    model = every_kind_convnet()
    optimizer = create_optimizer(cfg.optim, model)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p in model.parameters():
        moved = not torch.equal(before[id(p)], p.detach())
        assert moved == (id(p) not in exempt_params(model))


def test_frozen_parameters_are_left_out() -> None:
    model = every_kind_convnet()
    model[0].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.1, 0.01, no_decay_norm_bias=True)
    assert all(p is not model[0].weight for group in groups for p in group["params"])


@pytest.mark.parametrize("option", OPTIMS)
def test_fused_on_cpu_where_torch_has_it(option: str) -> None:
    cfg = composed(f"optim={option}", values={"optim.no_decay_norm_bias": True})
    optimizer = create_optimizer(cfg.optim, every_kind_convnet())
    assert [group.get("fused", False) for group in optimizer.param_groups] == [option in FUSED] * 2


def test_fused_kernels_only_for_float_parameters_on_cpu_or_cuda() -> None:
    floats, ints = [torch.zeros(3, requires_grad=True)], [torch.zeros(3, dtype=torch.long)]
    assert fast_kernel_kwargs(torch.optim.AdamW, floats) == {"fused": True}
    assert fast_kernel_kwargs(torch.optim.RMSprop, floats) == {}
    assert fast_kernel_kwargs(torch.optim.AdamW, ints) == {}
    assert fast_kernel_kwargs(torch.optim.AdamW, [torch.zeros(3, device="meta")]) == {}
    assert fast_kernel_kwargs(torch.optim.AdamW, []) == {}


def test_fused_step_matches_the_for_loop_step() -> None:
    """The fused kernel is the same update as torch's reference loop, to float rounding."""
    torch.manual_seed(0)
    fused_model, loop_model = every_kind_convnet(), every_kind_convnet()
    loop_model.load_state_dict(fused_model.state_dict())
    fused = torch.optim.AdamW(fused_model.parameters(), lr=0.01, weight_decay=0.1, **fast_kernel_kwargs(
        torch.optim.AdamW, list(fused_model.parameters())))
    loop = torch.optim.AdamW(loop_model.parameters(), lr=0.01, weight_decay=0.1, foreach=False)
    inputs = torch.randn(8, 1, 8, 8)
    for model, optimizer in ((fused_model, fused), (loop_model, loop)):
        model(inputs).square().mean().backward()
        optimizer.step()
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resumed_state_keeps_the_fused_kernel_and_the_parameters_layout() -> None:
    """A for-loop optimizer's state, saved with NCHW weights, resumed into a fused optimizer over channels_last
    weights: the kernel stays fused and the next step is the for loop's (a fused kernel reading NCHW-strided
    momentum for NHWC weights would update the wrong elements). SGD: its step is linear in the state, so the
    two kernels agree to rounding (Adam's sign-like steps on near-zero gradients would not)."""
    inputs = torch.randn(4, 1, 8, 8)
    saved_model = every_kind_convnet()
    saved = torch.optim.SGD(saved_model.parameters(), lr=0.1, momentum=0.9, foreach=False)
    for _ in range(2):
        saved.zero_grad()
        saved_model(inputs).square().mean().backward()
        saved.step()

    def resume(fused: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        state = copy.deepcopy(saved.state_dict())  # as read from a checkpoint: tensors of its own
        model = every_kind_convnet().to(memory_format=torch.channels_last)
        model.load_state_dict(saved_model.state_dict())
        params = list(model.parameters())
        if fused:
            optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, **fast_kernel_kwargs(torch.optim.SGD, params))
            load_optimizer_state(optimizer, state)
        else:
            optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=False)
            optimizer.load_state_dict(state)
        model(inputs).square().mean().backward()
        optimizer.step()
        return model, optimizer

    (fused_model, fused), (loop_model, _) = resume(fused=True), resume(fused=False)
    assert all(group["fused"] for group in fused.param_groups)
    for a, b in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("option", OPTIMS)
def test_fused_on_cuda_where_torch_has_it(option: str) -> None:
    cfg = composed(f"optim={option}", values={"optim.no_decay_norm_bias": True})
    model = every_kind_convnet().cuda()
    optimizer = create_optimizer(cfg.optim, model)
    assert [group.get("fused", False) for group in optimizer.param_groups] == [option in FUSED] * 2
    model(torch.randn(2, 1, 8, 8, device="cuda")).sum().backward()
    optimizer.step()


@pytest.mark.parametrize("option", OPTIMS)
def test_every_optimizer_trains(option: str) -> None:
    cfg = composed(f"optim={option}", values={"optim.no_decay_norm_bias": True})
    model = every_kind_convnet()
    optimizer = create_optimizer(cfg.optim, model)
    gen = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    losses = []
    for _ in range(10):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim=sgd", "optim.momentum=0", "optim.nesterov=true"], "optim.nesterov must be false when momentum is 0"),
    (["optim=rmsprop", "optim.alpha=1.0"], "optim.alpha must be in [0, 1)"),
    (["optim=adam", "optim.betas=[0.9,1.0]"], "optim.betas must be two values in [0, 1)"),
    (["optim=adam", "optim.eps=0"], "optim.eps must be > 0"),
    (["optim.layer_decay=0"], "optim.layer_decay must be in (0, 1] or null"),
    (["optim=muon", "optim.scale_lr_with_batch=cubic"], "optim.scale_lr_with_batch must be null or linear or sqrt"),
])
def test_out_of_range_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*overrides))


@pytest.mark.parametrize(("rule", "factor"), [("linear", 4.0), ("sqrt", 2.0)])
def test_scale_lr_with_batch_sets_the_runs_lr_and_what_follows_it(rule: str, factor: float) -> None:
    """32 per process x 4 processes x 2 accumulated = 256 = 4 x base_batch_size: the lr x 4, or x sqrt(4); onecycle's
    max_lr (${optim.lr}) follows."""
    cfg = composed("optim=sgd", "scheduler=onecycle", values={
        "optim.scale_lr_with_batch": rule, "optim.base_batch_size": 64, "data.batch_size": 32,
        "trainer.accumulate_grad_batches": 2})
    lr = cfg.optim.lr
    assert lr_batch_factor(cfg, world_size=4) == pytest.approx(factor)  # lr_find's override divides by it
    line = scale_lr_with_batch(cfg, world_size=4)
    assert cfg.optim.lr == pytest.approx(lr * factor)
    assert OmegaConf.to_container(cfg.scheduler, resolve=True)["max_lr"] == pytest.approx(lr * factor)
    assert line == f"optim.lr {lr:g} scaled {rule} to the global batch 256 (base_batch_size 64): x {factor:g} = " \
                   f"{lr * factor:g}"


def test_without_scale_lr_with_batch_the_lr_stays() -> None:
    cfg = composed("optim=sgd", values={"optim.base_batch_size": 1})
    lr = cfg.optim.lr
    assert scale_lr_with_batch(cfg, world_size=8) is None and cfg.optim.lr == lr
    assert lr_batch_factor(cfg, world_size=8) == 1.0


@pytest.mark.slow
def test_a_run_trains_at_the_scaled_lr_and_says_so(tmp_path) -> None:
    result = run_cli_in_process("debug=fast_dev_run", "optim=adamw", "optim.lr=0.003", "scheduler=none",
                                "optim.scale_lr_with_batch=linear", "optim.base_batch_size=32", "data.batch_size=64",
                                f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "optim.lr 0.003 scaled linear to the global batch 64 (base_batch_size 32): x 2 = 0.006" in result.stdout
    assert "adamw lr 0.006" in result.stdout
