"""The speed options on CPU: bf16 autocast, channels_last, torch.compile (aot_eager; tests/e2e/test_train.py builds
inductor's kernels under -m slow), and the loop without per-step syncs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import convnet, image_batches
from trainer.training.loop import LoopSettings, NonFiniteLoss, train_epoch, validate
from trainer.training.optim import Scheduler
from trainer.training.regularization import Regularization
from trainer.training.runtime import Precision, compile_model, is_compile_error, memory_format

CPU = torch.device("cpu")


def fit(model: nn.Module, precision: str = "32", epochs: int = 3, data: list | None = None,
        **loop_options) -> tuple[float, float]:
    """Val loss before and after training `model` on `data` (`image_batches()`) for a few epochs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = Scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "epoch")
    prec = Precision(precision, CPU)
    data = data or image_batches()
    fmt = loop_options.get("memory_format", torch.preserve_format)
    clean = [(x, y) for x, y in data if torch.isfinite(x).all()]
    before = validate(model, clean, nn.CrossEntropyLoss(), prec, fmt).loss
    for _ in range(epochs):
        train_epoch(model, data, Regularization(), optimizer, scheduler, prec.grad_scaler(),
                    LoopSettings(prec, **loop_options))
    return before, validate(model, clean, nn.CrossEntropyLoss(), prec, fmt).loss


def test_channels_last_trains_and_feeds_the_model_nhwc_inputs() -> None:
    fmt = memory_format(True)
    model = convnet().to(memory_format=fmt)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=fmt)))
    before, after = fit(model, memory_format=fmt)
    assert seen and all(seen)
    assert after < before * 0.5


def test_bf16_with_channels_last_trains_on_cpu() -> None:
    fmt = memory_format(True)
    before, after = fit(convnet().to(memory_format=fmt), precision="bf16", memory_format=fmt)
    assert after < before * 0.5


def test_compiled_model_trains_on_cpu() -> None:
    """The aot_eager backend traces the model through torch.compile without generating C++ (seconds, not a minute)."""
    model = convnet()
    compiled = compile_model(model, True, backend="aot_eager")
    assert compiled is not model and compile_model(model, False) is model
    before, after = fit(compiled)
    assert after < before * 0.5


def test_compile_errors_are_recognised() -> None:
    from torch._dynamo.exc import Unsupported

    assert is_compile_error(Unsupported("a graph break"))
    assert not is_compile_error(RuntimeError("shape mismatch"))


def test_without_per_step_checks_a_nan_stops_at_the_next_log_read() -> None:
    data = image_batches()
    data[2] = (torch.full_like(data[2][0], float("nan")), data[2][1])
    with pytest.raises(NonFiniteLoss) as caught:
        fit(convnet(), epochs=1, data=data, is_finite=None, log_every=4)
    assert caught.value.batch == 4  # batch 3 was NaN; the host first reads the loss after batch 4
    with pytest.raises(NonFiniteLoss) as caught:
        fit(convnet(), epochs=1, data=data, is_finite=None, log_every=100)  # no log read: the epoch's end catches it
    assert caught.value.batch == 6


def test_the_set_up_objects_sit_out_the_garbage_collectors_passes_while_the_run_trains(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from tests.conftest import run_cli_in_process
    from trainer.training import train

    frozen, epoch = [], train.train_one_epoch

    def counted(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", counted)
    run = run_cli_in_process("trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.progress=none",
                             "logger=none", "trainer.device=cpu", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    assert len(frozen) == 2 and min(frozen) > 10_000  # the modules, config and model at least
    assert gc.get_freeze_count() == 0  # handed back when the run ends


def test_a_later_run_collects_the_garbage_before_it_freezes_and_a_callers_freeze_is_left_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import weakref

    from trainer.training import runtime

    class Node:
        pass

    monkeypatch.setitem(runtime._FROZEN, "runs", 1)  # a sweep's second job
    cycle = Node()
    cycle.self = cycle
    gone = weakref.ref(cycle)
    del cycle
    runtime.freeze_setup_objects()
    try:
        assert gone() is None and gc.get_freeze_count() > 0  # collected, not kept for the run
    finally:
        runtime.release_setup_objects()
    assert gc.get_freeze_count() == 0

    gc.freeze()  # a caller's own
    try:
        before = gc.get_freeze_count()
        runtime.freeze_setup_objects()
        runtime.release_setup_objects()
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
