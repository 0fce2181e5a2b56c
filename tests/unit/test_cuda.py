"""On a CUDA device: mixed precision (bf16, fp16 with the gradient scaler), channels_last, torch.compile and the
in-memory data path, each a few real training steps of a tiny model built as the trainer builds its runs.

Every test here is marked `cuda`: it skips without a CUDA device (tests/conftest.py); scripts/gpu_check.sh runs
them, with the other cuda-marked tests, on a GPU machine (`pytest -m cuda`).
"""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import composed, write_cifar
from trainer.training.setup import RunSetup, build_run

pytestmark = pytest.mark.cuda

ON_GPU = ("model=simple_cnn", "trainer.device=cuda", "logger=none")
FAKE = ("data=fake", "data.image_size=32", "data.num_classes=4", "data.batch_size=8", "data.train_size=32",
        "data.val_size=8")


def tiny_run(*overrides: str, data: tuple[str, ...] = FAKE) -> RunSetup:
    """simple_cnn on the GPU (by default on 32 FakeData images), set up as trainer/training/train.py sets up a run."""
    return build_run(composed(*data, *ON_GPU, *overrides))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_trained(before: list[torch.Tensor], model: nn.Module) -> None:
    after = list(model.parameters())
    assert all(p.is_cuda and p.isfinite().all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), "no weight moved"


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("16", torch.float16)])
def test_mixed_precision_trains_with_float32_weights(precision: str, dtype: torch.dtype) -> None:
    run = tiny_run(f"trainer.precision={precision}")
    before = weights(run.model)
    stats = run.train_epoch(islice(run.train_loader, 2))
    assert math.isfinite(stats.loss) and stats.samples == 16 and stats.steps == 2
    assert_trained(before, run.model)
    assert {p.dtype for p in run.model.parameters()} == {torch.float32}  # autocast keeps float32 weights
    inputs, _ = next(iter(run.train_loader))
    with run.precision.autocast():
        assert run.model(inputs.cuda()).dtype == dtype
    assert run.scaler.is_enabled() == (precision == "16")  # only fp16 scales its loss
    if run.scaler.is_enabled():
        assert 0 < run.scaler.get_scale() < math.inf


def test_channels_last_reaches_the_convolutions_and_stays() -> None:
    run = tiny_run("trainer.channels_last=true", "trainer.precision=bf16")
    convs = [m for m in run.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    seen: list[bool] = []
    hook = convs[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    before = weights(run.model)
    stats = run.train_epoch(islice(run.train_loader, 2))
    hook.remove()
    assert seen == [True, True] and math.isfinite(stats.loss)  # the loop hands the model channels_last inputs
    assert_trained(before, run.model)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)  # after the steps too


def test_a_compiled_model_trains_and_its_weights_are_the_models() -> None:
    run = tiny_run("trainer.compile=true", "trainer.precision=bf16", "trainer.channels_last=true")
    assert getattr(run.train_model, "_orig_mod", None) is run.model  # torch.compile's wrapper of the saved model
    before = weights(run.model)
    stats = run.train_epoch(islice(run.train_loader, 3))  # the first batch compiles
    assert math.isfinite(stats.loss) and stats.steps == 3
    assert_trained(before, run.model)


def test_in_memory_batches_are_made_on_the_gpu_and_train(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", per_batch=12)  # 60 train images (54 after the val split), 12 test
    run = tiny_run("augment=basic", "trainer.precision=bf16",
                   data=("data=cifar10", f"data.root={tmp_path}", "data.in_memory=true", "data.batch_size=16"))
    run.datamodule.set_train_epoch(0)
    inputs, targets = next(iter(run.train_loader))
    assert inputs.device.type == "cuda" and targets.device.type == "cuda"
    assert inputs.shape == (16, 3, 32, 32) and inputs.is_floating_point()
    assert inputs.float().mean().abs() < 1.5  # normalised, not 0..255 pixels
    torch.cuda.reset_peak_memory_stats()
    before = weights(run.model)
    stats = run.train_epoch(run.train_loader)
    assert math.isfinite(stats.loss) and stats.samples == len(run.datamodule.train_set)
    assert_trained(before, run.model)
    assert torch.cuda.max_memory_allocated() > 0
