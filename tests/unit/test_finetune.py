"""Fine-tuning: model.init_from (weights from a file, first conv adapted, head re-initialised), model.freeze and
trainer.unfreeze_at_epoch, and what resume and the checkpoint modes make of them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import compose, run_cli_in_process, write_checkpoint
from trainer.build import build_model
from trainer.errors import CheckpointError, ConfigError
from trainer.modes.inference import load_for_inference
from trainer.reporting.console import RunConsole
from trainer.training.checkpoint import TrainState, save_checkpoint
from trainer.training.distributed import Distributed
from trainer.training.freeze import Unfreeze, check_freeze_options, freeze
from trainer.training.hooks import Hooks
from trainer.training.init_from import adapt_input_conv, init_from, start_model
from trainer.training.preemption import StopSignals
from trainer.training.resume_config import architecture, check_resume_config

CPU = torch.device("cpu")
HEAD = ["head.2.weight", "head.2.bias"]
FROZEN = "features.0"  # the first conv-norm-act block of a simple_cnn
SOURCES = {"checkpoint": "a trainer checkpoint, epoch 3", "state_dict": "a state_dict",
           "ddp_wrapped": "a state_dict in its 'state_dict' entry", "safetensors": "a safetensors file"}


def cnn(in_channels: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A seeded two-block simple_cnn (widths 4, 8) built as the CLI builds it."""
    torch.manual_seed(seed)
    return build_model({"_target_": "trainer.models.simple_cnn.SimpleCNN", "in_channels": in_channels,
                        "num_classes": num_classes, "widths": [4, 8], "act": "relu", "norm": "batch",
                        "dropout": 0.0, "spatial_dropout": 0.0})


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s state_dict after its BatchNorm statistics moved off their initial values (so that a loaded
    buffer cannot equal a fresh one by chance)."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, model.features[0][0].in_channels, 8, 8))
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_weights(kind: str, weights: dict[str, torch.Tensor], folder: Path) -> Path:
    """`weights` saved as `kind`: a trainer checkpoint, a plain state_dict, a DDP one in a wrapper, safetensors."""
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = folder / "weights.safetensors"
        save_file(weights, str(path))
        return path
    payload = {"checkpoint": {"model": weights, "config": {"model": {}}, "epoch": 3}, "state_dict": weights,
               "ddp_wrapped": {"state_dict": {f"module.{k}": v for k, v in weights.items()}}}[kind]
    path = folder / f"{kind}.pth"
    save_checkpoint(payload, path)
    return path


@pytest.mark.parametrize("kind", ["checkpoint", "state_dict", "ddp_wrapped", "safetensors"])
def test_init_from_loads_every_tensor_that_fits_and_reinitialises_the_head(kind: str, tmp_path: Path) -> None:
    source = trained_state(cnn(num_classes=10, seed=1))
    model = cnn(num_classes=5, seed=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from(model, write_weights(kind, source, tmp_path))
    assert report.source == SOURCES[kind]
    assert sorted(report.reinitialised) == sorted(HEAD) and not (report.adapted or report.missing)
    assert report.unexpected == [] and len(report.loaded) == len(fresh) - 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key in HEAD else source[key]), key
    assert "2 re-initialised" in report.lines() and "head.2.weight" in report.lines()


@pytest.mark.parametrize(("old", "new"), [(1, 3), (3, 1)])
def test_a_first_conv_for_other_input_channels_is_adapted_as_timm_does(old: int, new: int, tmp_path: Path) -> None:
    """1 -> 3: a grey image repeated in 3 channels gives what the 1-channel model gave the grey image; 3 -> 1:
    the grey image gives what the 3-channel model gave it repeated in 3 channels."""
    source = cnn(in_channels=old, seed=1).eval()
    path = tmp_path / "w.pt"
    save_checkpoint(source.state_dict(), path)
    model = cnn(in_channels=new, seed=2).eval()
    report = init_from(model, path)
    assert report.adapted == [f"features.0.0.weight ({old} -> {new})"] and not report.reinitialised
    grey = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(grey.expand(-1, new, -1, -1)), source(grey.expand(-1, old, -1, -1)),
                              atol=1e-5)


def test_a_checkpoint_of_other_classes_gives_no_head_one_of_the_same_classes_does(tmp_path: Path) -> None:
    """MNIST's ten digits are not CIFAR-10's ten classes: the shapes fit, but the classifier's rows would score the
    wrong classes, so it starts fresh; the same class names load it."""
    source = trained_state(cnn(seed=1))
    digits = [f"{i} - digit" for i in range(10)]
    save_checkpoint({"model": source, "config": {"model": {}}, "epoch": 3, "inference": {"classes": digits}},
                    tmp_path / "mnist.pt")
    model = cnn(seed=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from(model, tmp_path / "mnist.pt", classes=[f"class {i}" for i in range(10)])
    assert sorted(report.other_classes) == sorted(HEAD) and not report.reinitialised
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key in HEAD else source[key]), key
    assert "new head (the file's classes are not the data's): head.2" in report.lines()
    same = init_from(cnn(seed=2), tmp_path / "mnist.pt", classes=digits)
    assert not same.other_classes and set(HEAD) <= set(same.loaded)


def test_only_the_first_conv_is_adapted_a_later_conv_of_another_width_is_reinitialised(tmp_path: Path) -> None:
    """widths [4, 8] -> [6, 8]: the second block's conv (4 -> 6 inputs) differs in dim 1 alone, like an input conv,
    but is no input conv: it keeps its fresh initialisation (and so does the first conv, 4 -> 6 outputs)."""
    save_checkpoint(cnn(seed=1).state_dict(), tmp_path / "w.pt")
    torch.manual_seed(2)
    model = build_model({"_target_": "trainer.models.simple_cnn.SimpleCNN", "in_channels": 3, "num_classes": 10,
                         "widths": [6, 8], "act": "relu", "norm": "batch", "dropout": 0.0, "spatial_dropout": 0.0})
    fresh = model.state_dict()["features.2.0.weight"].clone()
    report = init_from(model, tmp_path / "w.pt")
    assert not report.adapted and "features.2.0.weight" in report.reinitialised
    assert torch.equal(model.state_dict()["features.2.0.weight"], fresh)


def test_adapting_to_other_counts_repeats_and_rescales_the_channels() -> None:
    weight = torch.randn(4, 3, 3, 3)
    adapted = adapt_input_conv(weight, 5)
    assert adapted.shape == (4, 5, 3, 3)
    assert torch.allclose(adapted, torch.cat([weight, weight[:, :2]], dim=1) * 3 / 5)


def test_a_missing_file_or_one_without_a_fitting_tensor_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.init_from=.*nope.pt: not found"):
        init_from(cnn(), tmp_path / "nope.pt")
    path = tmp_path / "other.pt"
    save_checkpoint({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="none of its 1 tensors fits the model") as err:
        init_from(cnn(), path)
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="junk.pt does not read as weights"):
        init_from(cnn(), tmp_path / "junk.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # loading it would need arbitrary unpickling
    with pytest.raises(CheckpointError, match="refusing to load it"):
        init_from(cnn(), tmp_path / "pickled_module.pt")


def test_a_resumed_run_ignores_init_from_and_says_so() -> None:
    model = cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    notes = start_model(model, "/no/such/file.pt", resumed=True)
    assert len(notes) == 1 and "ignored" in notes[0]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_checkpoint_modes_and_build_model_do_not_apply_init_from_or_freeze(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "c.pt", "data=fake", "data.image_size=8", "model.widths=[4]",
                            "model.init_from=/no/such/file.pt", f"model.freeze=[{FROZEN}]")
    loaded = load_for_inference(ckpt, CPU)
    assert all(p.requires_grad for p in loaded.model.parameters())
    saved = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in loaded.model.state_dict().items())


def test_frozen_parameters_and_their_norm_statistics_do_not_change_under_adamw_weight_decay() -> None:
    model = cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5, fused=True)  # as the run's
    freeze(model, [FROZEN])
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(FROZEN + ".")}
    others = {k: v.clone() for k, v in model.named_parameters() if not k.startswith(FROZEN + ".")}
    model.train()  # what every epoch does: the frozen norm stays in eval mode
    assert not model.features[0][1].training and model.features[2][1].training
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
        optimizer.step()
    assert len(frozen) == 6  # conv weight, BatchNorm weight and bias, running mean, var and count
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert all(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in others.items())


def test_an_unknown_freeze_prefix_lists_the_models_modules() -> None:
    with pytest.raises(ConfigError, match=r"model.freeze: stem names no parameters .*modules: features, pool, head"):
        freeze(cnn(), ["stem"])
    with pytest.raises(ConfigError, match="features.01"):  # a prefix is a module name, not a string prefix
        freeze(cnn(), ["features.01"])


def test_unfreeze_at_epoch_needs_freeze_and_a_single_process(caplog: pytest.LogCaptureFixture) -> None:
    cfg = OmegaConf.create({"trainer": {"unfreeze_at_epoch": 1, "max_epochs": 2}, "model": {"freeze": []}})
    with pytest.raises(ConfigError, match="needs model.freeze"):
        check_freeze_options(cfg, Distributed())
    cfg.model.freeze = [FROZEN]
    check_freeze_options(cfg, Distributed())
    assert "does not lift" not in caplog.text
    with pytest.raises(ConfigError, match="not supported under torchrun"):
        check_freeze_options(cfg, Distributed(world_size=2))
    cfg.trainer.max_epochs = 1  # allowed (a resume may extend the run), but said
    check_freeze_options(cfg, Distributed())
    assert "the freeze does not lift in a run of trainer.max_epochs=1" in caplog.text


@pytest.mark.parametrize(("epoch", "batch", "trains"), [(0, 0, False), (0, 3, False), (1, 0, True), (1, 2, True),
                                                        (4, 0, True)])
def test_the_freeze_lifts_after_unfreeze_at_epoch_epochs_a_resumed_run_too(epoch: int, batch: int,
                                                                           trains: bool) -> None:
    """A fresh run, or one resumed after `epoch` epochs (and `batch` batches of the next): frozen until
    trainer.unfreeze_at_epoch=1 epochs are done, then every parameter trains."""
    model = cnn()
    kept_frozen = model.features[0][1].weight.requires_grad_(False)  # frozen by the model itself: stays frozen
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    freeze(model, [FROZEN])
    state = TrainState(epoch=epoch, batch_in_epoch=batch)
    with StopSignals() as stop:
        Hooks([Unfreeze(model, optimizer, [FROZEN], 1, RunConsole("none"))], state, stop, Distributed(), CPU,
              4).before_epoch()
    model.train()
    assert not kept_frozen.requires_grad
    assert all(p.requires_grad == trains for p in model.features[0].parameters() if p is not kept_frozen)
    assert model.features[0][1].training == trains and all(p.requires_grad for p in model.head.parameters())


@pytest.fixture(scope="module")
def saved_config() -> dict:
    return OmegaConf.to_container(compose(f"model.freeze=[{FROZEN}]", "trainer.unfreeze_at_epoch=2"), resolve=True)


@pytest.mark.parametrize(("key", "value", "refused"), [
    ("model.init_from", "/elsewhere/best.pt", False),  # the checkpoint's weights win
    ("model.freeze", ["features"], True), ("trainer.unfreeze_at_epoch", 3, True), ("trainer.unfreeze_at_epoch", None,
                                                                                  True)])
def test_a_resume_accepts_another_init_from_but_not_other_freezing(saved_config: dict, key: str, value: object,
                                                                   refused: bool) -> None:
    checkpoint = {"config": saved_config, "epoch": 1, "state": {"epoch": 1}}
    wanted = copy.deepcopy(saved_config)
    group, name = key.split(".")
    wanted[group][name] = value
    if not refused:
        check_resume_config(checkpoint, wanted, "last.pt", 1)
        return
    with pytest.raises(CheckpointError, match="made with model.freeze=\\[features.0\\] and trainer.unfreeze_at_"):
        check_resume_config(checkpoint, wanted, "last.pt", 1)


def test_a_checkpoint_from_before_freeze_resumes_unfrozen(saved_config: dict) -> None:
    old = copy.deepcopy(saved_config)
    del old["model"]["freeze"], old["model"]["init_from"], old["trainer"]["unfreeze_at_epoch"]
    wanted = {**saved_config, "model": {**saved_config["model"], "freeze": []},
              "trainer": {**saved_config["trainer"], "unfreeze_at_epoch": None}}
    check_resume_config({"config": old, "epoch": 1, "state": {"epoch": 1}}, wanted, "last.pt", 1)


def test_a_cli_run_with_init_from_prints_what_it_loaded(tmp_path: Path) -> None:
    source = cnn(in_channels=1, num_classes=10)  # a 1-channel, 10-class model started on 3 channels, 5 classes
    save_checkpoint(source.state_dict(), tmp_path / "grey.pt")
    result = run_cli_in_process(
        "data=fake", "data.image_size=8", "data.num_classes=5", "data.train_size=16", "data.val_size=16",
        "data.batch_size=16", "model.widths=[4,8]", f"model.init_from={tmp_path / 'grey.pt'}",
        f"model.freeze=[{FROZEN}]", "trainer.max_epochs=1", "trainer.progress=plain", "logger=none",
        "trainer.device=cpu", "trainer.save_checkpoints=false", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    counts = "11 loaded, 1 adapted, 2 re-initialised, 0 new head, 0 missing, 0 unexpected"
    assert f"(a state_dict): {counts}" in result.stdout
    assert "re-initialised (shape differs): head.2.weight, head.2.bias" in result.stdout
    assert "adapted (input channels): features.0.0.weight (1 -> 3)" in result.stdout
    first_block = 4 * 3 * 3 * 3 + 2 * 4  # its bias-free 3x3 conv from 3 channels to 4, its BatchNorm weight and bias
    assert f"model.freeze=[{FROZEN}]: {first_block} of " in result.stdout


@pytest.mark.slow  # three short training runs
def test_a_run_resumed_after_the_unfreeze_epoch_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    quick = ("model.widths=[4,8]", f"model.freeze=[{FROZEN}]", "trainer.unfreeze_at_epoch=1", "scheduler=none",
             "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.progress=plain", "logger=none",
             "trainer.device=cpu")
    whole = run_cli_in_process(*quick, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    assert "epoch 2: model.freeze=[features.0] lifted" in whole.stdout
    cut = run_cli_in_process(*quick, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'cut'}")
    resumed = run_cli_in_process(*quick, "trainer.max_epochs=2", "trainer.resume=auto",
                                 f"hydra.run.dir={tmp_path / 'cut'}")
    assert cut.returncode == 0 and resumed.returncode == 0, resumed.stderr
    assert "lifted" in resumed.stdout
    assert (tmp_path / "cut" / "metrics.csv").read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()
    weights = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True)["model"]
               for run in ("whole", "cut")]
    assert all(torch.equal(value, weights[1][key]) for key, value in weights[0].items())


def test_a_resume_compares_the_architecture_not_where_its_first_weights_came_from() -> None:
    """A resumed run takes its checkpoint's weights: init_from and a timm pretrained_file (moved since, or
    dropped from the command line) are not part of what must match."""
    model = {"_target_": "trainer.models.timm_model.build", "name": "resnet10t", "init_from": "/a.pt",
             "pretrained_file": "/old/w.pth", "freeze": []}
    assert architecture({"model": model}) == {"_target_": "trainer.models.timm_model.build", "name": "resnet10t"}
