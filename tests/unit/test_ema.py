"""ModelEma: timm's warm-up, averaging every n-th step, buffers, and state dicts compatible with AveragedModel."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainer.training.ema import ModelEma, create_ema


def nudge(model: nn.Module, step: int) -> None:
    """Move every parameter by a step-dependent amount, as an optimizer step would."""
    with torch.no_grad():
        for i, param in enumerate(model.parameters()):
            param.add_(0.1 * (step + 1) * (i + 1) - 0.05 * step ** 2)


def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def test_decay_is_constant_without_warmup() -> None:
    ema = create_ema(linear(), 0.99)
    assert [ema.decay_at(n) for n in (0, 1, 10, 10_000)] == [0.99] * 4


def test_warmup_follows_timm_and_is_capped_at_the_decay() -> None:
    ema = create_ema(linear(), 0.99, warmup=True)
    # 1 - (1 + n) ** (-2/3): 0 for the first average, 1 - 8 ** (-2/3) = 3/4 after 7, 1 - 1/9 after 26.
    assert ema.decay_at(0) == 0.0
    assert ema.decay_at(7) == pytest.approx(0.75)
    assert ema.decay_at(26) == pytest.approx(8 / 9)
    assert ema.decay_at(10_000) == 0.99  # 1 - 10001 ** (-2/3) = 0.9979 > 0.99
    decays = [ema.decay_at(n) for n in range(2000)]
    assert all(a <= b for a, b in zip(decays, decays[1:], strict=False)) and decays[-1] == 0.99


def test_every_n_steps_averages_on_every_third_step_only() -> None:
    decay, model = 0.8, linear()
    ema = create_ema(model, decay, every_n_steps=3)
    expected, averaged = None, []
    for step in range(1, 10):
        nudge(model, step)
        ema.update(model)
        if step % 3 == 0:
            current = model.weight.detach().clone()
            expected = current if expected is None else decay * expected + (1 - decay) * current
        averaged.append(int(ema.n_averaged))
        if expected is not None:
            torch.testing.assert_close(ema.module.weight, expected)
    assert averaged == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert int(ema.n_steps) == 9
    assert not torch.equal(ema.module.weight, model.weight)


def test_the_first_average_copies_the_weights() -> None:
    model = linear()
    ema = create_ema(model, 0.9999)
    nudge(model, 3)
    ema.update(model)
    assert torch.equal(ema.module.weight, model.weight) and torch.equal(ema.module.bias, model.bias)
    assert not ema.module.weight.requires_grad


def test_warmup_blends_with_the_warmup_decay() -> None:
    model = linear()
    ema = create_ema(model, 0.999, warmup=True)
    ema.update(model)
    first = model.weight.detach().clone()
    nudge(model, 1)
    ema.update(model)  # one earlier average: d = 1 - 2 ** (-2/3)
    d = 1 - 2 ** (-2 / 3)
    torch.testing.assert_close(ema.module.weight, d * first + (1 - d) * model.weight.detach())


def test_state_dict_keys_are_averaged_models_plus_n_steps() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    reference = AveragedModel(model, use_buffers=True).state_dict()
    assert set(create_ema(model, 0.9).state_dict()) == set(reference) | {"n_steps"}


def test_an_averaged_model_checkpoint_resumes_into_model_ema() -> None:
    model, decay = linear(), 0.7
    old = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    for step in range(3):
        nudge(model, step)
        old.update_parameters(model)
    ema = create_ema(linear(), decay)
    ema.load_state_dict(old.state_dict())
    assert (int(ema.n_averaged), int(ema.n_steps)) == (3, 3)
    nudge(model, 3)
    old.update_parameters(model)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, old.module.weight)
    # The reverse: our state dict fills an AveragedModel, n_steps being the one key it has no use for.
    back = AveragedModel(linear(), use_buffers=True)
    assert back.load_state_dict(ema.state_dict(), strict=False).unexpected_keys == ["n_steps"]
    assert int(back.n_averaged) == 4 and torch.equal(back.module.weight, ema.module.weight)


def test_a_save_and_load_continues_bitwise_like_an_uninterrupted_ema() -> None:
    model = linear()
    uninterrupted = create_ema(model, 0.9, warmup=True, every_n_steps=2)
    first_half = create_ema(model, 0.9, warmup=True, every_n_steps=2)
    for step in range(5):
        nudge(model, step)
        uninterrupted.update(model)
        first_half.update(model)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    buffer.seek(0)
    resumed = create_ema(linear(), 0.9, warmup=True, every_n_steps=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(5, 10):
        nudge(model, step)
        uninterrupted.update(model)
        resumed.update(model)
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert int(resumed.n_averaged) == 5


def test_batchnorm_buffers_are_averaged_and_the_batch_count_copied() -> None:
    torch.manual_seed(0)
    model, decay = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 0.6
    ema = create_ema(model, decay)
    means = []
    for _ in range(3):
        model(torch.randn(8, 3) * 3 + 1)
        means.append(model[1].running_mean.clone())
        ema.update(model)
    expected = means[0]
    for mean in means[1:]:
        expected = decay * expected + (1 - decay) * mean
    torch.testing.assert_close(ema.module[1].running_mean, expected)
    assert int(ema.module[1].num_batches_tracked) == int(model[1].num_batches_tracked) == 3


class Wrapper(nn.Module):
    """Holds the model as DDP and torch.compile do: no tensors of its own."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_a_wrapped_model_updates_like_the_bare_one() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    bare, wrapped = create_ema(model, 0.5), create_ema(model, 0.5)
    for step in range(3):
        model(torch.randn(8, 3))
        nudge(model, step)
        bare.update(model)
        wrapped.update(Wrapper(model))
    for key, value in bare.state_dict().items():
        assert torch.equal(wrapped.state_dict()[key], value), key


def test_every_n_steps_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        ModelEma(linear(), 0.9, every_n_steps=0)
