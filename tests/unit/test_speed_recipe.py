"""The CIFAR-10 speed recipe's pieces on the CPU: the airbench model and its whitening init, BatchNorm bias
scaling, alternating flips on the in-memory path, and `+experiment=cifar10_speed` composing and training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import build, compose, read_json, run_cli_in_process, write_cifar
from trainer.build import build_model
from trainer.data.batch_augment import BatchAugment
from trainer.data.in_memory import DeviceTrainBatches, Normalizer
from trainer.data.sampler import EpochSampler
from trainer.errors import ConfigError
from trainer.models.airbench import WHITEN_EPS, Airbench
from trainer.schema import validate
from trainer.training import whitening
from trainer.training.optim import create_optimizer, create_scheduler
from trainer.training.param_groups import parameter_groups
from trainer.training.whitening import whiten_first_layer


def small_airbench() -> Airbench:
    return build_model(compose("model=airbench", "data=cifar10", "model.widths=[8,8]").model)


def correlated_images(count: int = 64, size: int = 12) -> torch.Tensor:
    """Smooth colour images: neighbouring pixels and channels strongly correlated, as in natural images."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(count, 1, size // 2, size // 2, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    tint = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    return smooth * tint + 0.05 * torch.randn(count, 3, size, size, generator=generator)


def test_the_whitening_filters_decorrelate_the_patches_they_were_set_from() -> None:
    model = small_airbench()
    assert torch.equal(model.whiten.bias, torch.zeros(24))
    images = correlated_images()
    model.init_whitening(images)
    responses = model.whiten(images) - model.whiten.bias.view(1, -1, 1, 1)  # N x 24 x H' x W'
    half = responses[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = half.T @ half / len(half)
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    # Each filter's response has variance lambda / (lambda + eps) and none correlates with another.
    assert torch.allclose(covariance, torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS)), atol=1e-4)
    assert torch.allclose(responses[:, 12:], -responses[:, :12], atol=1e-5)
    raw = patches.T @ patches / len(patches)
    assert (raw - torch.diag(raw.diagonal())).abs().max() > 0.1  # the patches themselves were correlated


def test_the_whitening_layer_and_the_norm_weights_do_not_train_and_the_norm_biases_get_the_boost() -> None:
    model = build_model(compose("model=airbench", "data=cifar10").model)
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    assert "whiten.weight" in frozen and "stages.0.norm1.weight" in frozen and "whiten.bias" not in frozen
    groups = parameter_groups(model, lr=0.2, weight_decay=0.01, norm_bias_lr_mult=64)
    names = {id(param): name for name, param in model.named_parameters()}
    by_name = {names[id(param)]: group for group in groups for param in group["params"]}
    assert not frozen & set(by_name)
    norm_bias, conv = by_name["stages.1.norm2.bias"], by_name["stages.1.conv2.weight"]
    assert norm_bias["lr"] == pytest.approx(0.2 * 64) and norm_bias["weight_decay"] == pytest.approx(0.01 / 64)
    assert norm_bias["lr"] * norm_bias["weight_decay"] == pytest.approx(conv["lr"] * conv["weight_decay"])
    assert conv["lr"] == pytest.approx(0.2) and by_name["whiten.bias"]["lr"] == pytest.approx(0.2)
    assert by_name["head.weight"] is conv  # every other parameter: one group at optim's lr and decay


def test_optim_norm_bias_lr_mult_reaches_the_optimizer_groups() -> None:
    cfg = compose("model=airbench", "data=cifar10", "optim=sgd", "optim.lr=0.1", "optim.norm_bias_lr_mult=8")
    validate(cfg)
    optimizer = create_optimizer(cfg.optim, build_model(cfg.model))
    assert sorted({group["lr"] for group in optimizer.param_groups}) == pytest.approx([0.1, 0.8])


def test_whiten_init_sets_the_filters_from_the_first_training_images_unless_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whitening, "WHITENING_IMAGES", 20)
    write_cifar(tmp_path, "cifar10")
    overrides = ("model=airbench", "model.widths=[8,8]", "data=cifar10", f"data.root={tmp_path}", "data.in_memory=true")
    datamodule = build(*overrides)
    model = build_model(compose(*overrides).model)
    fresh = model.whiten.weight.clone()
    assert whiten_first_layer(model, datamodule, enabled=True, resumed=True) == []
    assert torch.equal(model.whiten.weight, fresh)
    notes = whiten_first_layer(model, datamodule, enabled=True, resumed=False)
    assert notes == ["whitening: the first layer's filters set from 20 training images"]
    expected = small_airbench()
    raw_first = datamodule.train_set.tensors[0][:20]  # the in-memory set: uint8, not augmented
    expected.init_whitening(Normalizer(*datamodule.normalization(), torch.device("cpu"))(raw_first))
    assert torch.allclose(model.whiten.weight, expected.whiten.weight)
    assert not torch.equal(fresh, expected.whiten.weight)
    with pytest.raises(ConfigError, match="model=airbench"):
        whiten_first_layer(torch.nn.Linear(2, 2), datamodule, enabled=True, resumed=False)


def flips_by_sample(batches: DeviceTrainBatches, epoch: int, start_batch: int = 0) -> dict[int, bool]:
    """Which samples came out mirrored: image i is its label i in the left column and 0 elsewhere."""
    batches.set_epoch(epoch, start_batch)
    seen = {}
    for inputs, labels in batches:
        for image, label in zip(inputs, labels.tolist(), strict=True):
            seen[label] = bool(image[0, :, -1].sum() > image[0, :, 0].sum())
    return seen


def test_alternating_flips_mirror_each_image_every_other_epoch_on_any_start() -> None:
    count = 200
    images = torch.zeros(count, 1, 4, 4, dtype=torch.uint8)
    images[:, :, :, 0] = 1 + torch.arange(count, dtype=torch.uint8).view(-1, 1, 1) % 250
    labels = torch.arange(count)
    augment = BatchAugment(4, padding=0, flip=0.5, alternating_flip=True)
    batches = DeviceTrainBatches(images, labels, Normalizer([0.0], [1.0], torch.device("cpu")), 16,
                                 EpochSampler(count, 16, True, seed=3), augment)
    epochs = [flips_by_sample(batches, epoch) for epoch in range(4)]
    assert 70 < sum(epochs[0].values()) < 130  # about half mirrored at random in the first epoch
    for sample in range(count):
        assert [epoch[sample] for epoch in epochs] == [epochs[0][sample], not epochs[0][sample]] * 2
    resumed = flips_by_sample(batches, 3, start_batch=5)
    assert resumed and all(resumed[sample] == epochs[3][sample] for sample in resumed)


def test_augment_alternating_flip_reaches_the_in_memory_batches_and_is_refused_elsewhere(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    datamodule = build("data=cifar10", f"data.root={tmp_path}", "data.in_memory=true", "augment=basic",
                       "augment.alternating_flip=true")
    assert datamodule.batch_augment.alternating_flip
    batches = datamodule.train_loader(seed=0)
    first = batches.image_flips.clone()
    datamodule.set_train_epoch(1)
    assert torch.equal(batches.image_flips, ~first) and 0 < int(first.sum()) < len(first)
    with pytest.raises(ConfigError, match="data.in_memory=true"):
        build("data=fake", "augment=basic", "augment.alternating_flip=true")
    with pytest.raises(ConfigError, match="alternating_flip"):
        validate(compose("augment=basic", "augment.flip=false", "augment.alternating_flip=true"))


def test_the_recipe_has_airbenchs_lr_decay_and_triangular_schedule() -> None:
    cfg = compose("+experiment=cifar10_speed")
    # airbench94: lr 11.5 and decay 0.0153 per 1024 examples of a summed loss, momentum 0.85, batch 1024; SGD on the
    # mean loss of 1024 takes lr 11.5 / (1 + 1 / (1 - momentum)) and decay 0.0153 / 11.5 for the same steps
    assert cfg.optim.momentum == 0.85 and cfg.optim.base_batch_size == 1024
    assert cfg.optim.lr == pytest.approx(11.5 / (1 + 1 / (1 - 0.85)), rel=1e-3)
    assert cfg.optim.weight_decay == pytest.approx(0.0153 / 11.5, rel=1e-3)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optim.lr)
    schedule = create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=100, max_epochs=1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_batch()
    peak = max(lrs)  # the triangle: 0.2 of the peak at the start, the peak at 23% of the steps, 0.07 at the end
    assert peak == pytest.approx(cfg.optim.lr)
    assert lrs[0] / peak == pytest.approx(0.2) and lrs[-1] / peak == pytest.approx(0.07, abs=0.01)
    assert abs(lrs.index(peak) - 23) <= 1
    assert all(b >= a for a, b in zip(lrs[:22], lrs[1:23], strict=True))


def test_the_speed_recipe_composes_and_trains_a_step(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data", "cifar10")
    run = run_cli_in_process("+experiment=cifar10_speed", f"data.root={tmp_path / 'data'}", "trainer.device=cpu",
                             "data.batch_size=16", "model.widths=[16,32,32]", "trainer.max_epochs=1",
                             "trainer.limit_train_batches=2", "logger=none", "trainer.progress=plain",
                             f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr
    assert "whitening: the first layer's filters set from 50 training images" in run.stdout
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["monitor"] == "val_ema/acc" and 0.0 <= summary["test_acc"] <= 1.0
    cfg = compose("+experiment=cifar10_speed")
    assert (cfg.model.whiten_init, cfg.augment.alternating_flip, cfg.data.in_memory, cfg.optim.nesterov,
            cfg.optim.norm_bias_lr_mult, cfg.regularization.label_smoothing, cfg.eval.tta) == (
        True, True, True, True, 64, 0.2, "flip_translate")
    cuda = compose("+experiment=cifar10_speed_cuda")
    assert (cuda.trainer.precision, cuda.trainer.channels_last, cuda.trainer.compile, cuda.model.widths) == (
        "bf16", True, True, [64, 256, 256])
