"""The bad-input catalogue: each case exits non-zero with one clear line, no traceback, nothing clobbered.

Cases that stop before training run the CLI in this process (`run_cli_in_process`: one `trainer.cli.main()`
call, as `python -m trainer` makes it); those where a process boundary matters (signals, worker processes,
a diverging run, unpickling a malicious file, a full disk) run it as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, digest, run_cli, run_cli_in_process, tree_digest, write_image_tree

HYDRA_EXIT, USER_EXIT = 1, 2


def assert_clean_failure(result: subprocess.CompletedProcess, code: int, expected: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # exactly one line
    assert result.stderr.startswith("error: "), result.stderr


# (overrides, exit code, text the one line must contain); none of these gets as far as loading data. A range check
# has one case here, at its boundary; tests/unit/test_config.py refuses values past it (in-process, cheaper).
CONFIG_CASES = [
    (["model=resnet5000"], HYDRA_EXIT, "Could not find 'model/resnet5000'"),
    (["data=nope"], HYDRA_EXIT, "Could not find 'data/nope'"),
    (["optim.nope=1"], HYDRA_EXIT, "Key 'nope' not in 'AdamWConfig'"),
    (["trainer.nope=1"], HYDRA_EXIT, "Key 'nope' not in 'TrainerConfig'"),
    (["trainer.progres=none"], HYDRA_EXIT, "Key 'progres' not in 'TrainerConfig'"),
    (["optim.lr=["], HYDRA_EXIT, "cannot parse override 'optim.lr=['"),
    (["hydra/launcher=nope"], HYDRA_EXIT, "Could not find 'hydra/launcher/nope' (options: basic, joblib"),
    (["~data"], USER_EXIT, "no data chosen; pick one with data=OPTION"),
    (["optim.lr=abc"], HYDRA_EXIT, "could not be converted to Float"),
    (["trainer.max_epochs=many"], HYDRA_EXIT, "could not be converted to Integer"),
    (["optim.lr=0"], USER_EXIT, "optim.lr must be > 0"),
    (["optim.weight_decay=-1"], USER_EXIT, "optim.weight_decay must be >= 0"),
    (["data.batch_size=0"], USER_EXIT, "data.batch_size must be > 0"),
    (["trainer.max_epochs=0"], USER_EXIT, "trainer.max_epochs must be >= 1"),
    (["trainer.precision=8"], USER_EXIT, "trainer.precision must be one of 32, bf16, 16"),
    (["trainer.device=tpu"], USER_EXIT, "trainer.device must be auto, cpu, cuda or cuda:N"),
    (["trainer.accumulate_grad_batches=0"], USER_EXIT, "trainer.accumulate_grad_batches must be >= 1"),
    (["regularization.label_smoothing=1.5"], USER_EXIT, "regularization.label_smoothing must be in [0, 1)"),
    (["mode=eval"], USER_EXIT, "ckpt must be a checkpoint path when mode=eval"),
    # keys no schema declares (issue 14): refused like Hydra's own unknown keys, with the schema's closest field
    (["+trainer.max_epoch=2"], HYDRA_EXIT, "unknown key trainer.max_epoch: TrainerConfig has no such field"),
    (["+foo=1"], HYDRA_EXIT, "unknown key foo: TrainConfig has no such field"),
    (["+optim.lrr=0.1"], HYDRA_EXIT, "did you mean optim.lr?"),
    (["trainer.max_epoch=2"], HYDRA_EXIT, "Key 'max_epoch' not in 'TrainerConfig'; did you mean trainer.max_epochs?"),
    (["trainr.max_epochs=2"], HYDRA_EXIT, "did you mean trainer?"),
    (["scheduler=nope"], HYDRA_EXIT, "Could not find 'scheduler/nope' (options: cosine"),
    (["augment=nope"], HYDRA_EXIT, "Could not find 'augment/nope'"),
    (["seed=abc"], HYDRA_EXIT, "could not be converted to Integer"),
    (["mode=dance"], USER_EXIT, "mode must be one of train, eval"),
    (["mode=predict", "ckpt=x.pt"], USER_EXIT, "predict.input must be an image file or folder when mode=predict"),
    (["data.num_workers=-1"], USER_EXIT, "data.num_workers must be >= 0"),
    (["data.val_fraction=1.5"], USER_EXIT, "data.val_fraction must be in (0, 1)"),
    (["trainer.grad_clip_norm=0"], USER_EXIT, "trainer.grad_clip_norm must be > 0 or null"),
    (["trainer.progress=loud"], USER_EXIT, "trainer.progress must be one of auto, rich, plain, none"),
    (["trainer.skip_nonfinite=true", "trainer.check_nonfinite_every_step=false"], USER_EXIT,
     "trainer.skip_nonfinite must be false when check_nonfinite_every_step=false"),
    (["model.dropout=1.0"], USER_EXIT, "model.dropout must be in [0, 1)"),
    (["regularization.ema_decay=1.5"], USER_EXIT, "regularization.ema_decay must be in (0, 1) or null"),
    (["optim=sgd", "optim.momentum=-1"], USER_EXIT, "optim.momentum must be in [0, 1)"),
    (["scheduler=onecycle", "scheduler.pct_start=2"], USER_EXIT, "scheduler.pct_start must be in (0, 1)"),
    (["export.format=tflite"], USER_EXIT, "export.format must be one of torchscript, onnx"),
]


@pytest.mark.parametrize(("overrides", "code", "expected"), CONFIG_CASES)
def test_bad_config_values(tmp_path: Path, overrides: list[str], code: int, expected: str) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", *overrides)
    assert_clean_failure(result, code, expected)
    assert "To append to your config use +" not in result.stderr  # Hydra's advice: a + key is refused too
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu(tmp_path: Path) -> None:
    assert_clean_failure(run_cli_in_process(f"hydra.run.dir={tmp_path}", "trainer.device=cuda"), USER_EXIT,
                         "no CUDA device is available")


def test_missing_data_folder(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=mnist", f"data.root={tmp_path / 'nowhere'}")
    assert_clean_failure(result, USER_EXIT, str(tmp_path / "nowhere"))


def test_missing_cifar_files_name_the_folder(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=cifar10", f"data.root={tmp_path}")
    assert_clean_failure(result, USER_EXIT, "cifar-10-batches-py")


def test_empty_imagefolder(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=imagefolder",
                                f"data.train_dir={tmp_path / 'train'}", "data.num_classes=2")
    assert_clean_failure(result, USER_EXIT, "has no class folders")


def test_imagefolder_class_mismatch(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", classes=("cat", "dog"))
    val = write_image_tree(tmp_path / "val", classes=("cat", "emu"))
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=imagefolder", f"data.train_dir={train}",
                     f"data.val_dir={val}", "data.num_classes=2")
    assert_clean_failure(result, USER_EXIT, "need the same class folders")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_the_file(tmp_path: Path, workers: int) -> None:
    train = write_image_tree(tmp_path / "train", classes=("cat", "dog"))
    bad = train / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = [f"hydra.run.dir={tmp_path / 'run'}", "data=imagefolder", f"data.train_dir={train}",
              f"data.val_dir={train}", "data.num_classes=2", "data.image_size=8", "data.batch_size=8",
              f"data.num_workers={workers}", "trainer.max_epochs=1", "logger=none"]
    assert_clean_failure(run_cli_in_process(*common), USER_EXIT, f"cannot read image {bad}")


def test_corrupt_images_are_skipped_and_counted_when_asked(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", classes=("cat", "dog"))
    (train / "dog" / "broken.png").write_bytes(b"junk")
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=imagefolder", f"data.train_dir={train}",
                                f"data.val_dir={train}", "data.num_classes=2", "data.image_size=8",
                                "data.batch_size=8", "data.num_workers=0", "data.skip_corrupt=true",
                                "trainer.max_epochs=1", "logger=none")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable image(s)" in (tmp_path / "run" / "train.log").read_text()  # train + val


SHORT = ("trainer.limit_train_batches=4", "logger=none")  # finished_run's epochs (a resume of it repeats them)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("done") / "run"
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", *SHORT)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_resume_path_missing(tmp_path: Path) -> None:
    assert_clean_failure(run_cli_in_process(f"hydra.run.dir={tmp_path}", "trainer.resume=/no/such/file.pt"), USER_EXIT,
                         "checkpoint not found: /no/such/file.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_or_truncated_checkpoint(finished_run: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.pt"
    data = (finished_run / "checkpoints" / "last.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"PK\x03\x04 not a checkpoint")
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", f"trainer.resume={bad}")
    assert_clean_failure(result, USER_EXIT, f"checkpoint {bad} is corrupt")


def test_checkpoint_of_another_model(finished_run: Path, tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "model=mlp",
                     f"trainer.resume={finished_run / 'checkpoints' / 'last.pt'}")
    assert_clean_failure(result, USER_EXIT, "was made for another model (model._target_: checkpoint")


def test_an_existing_run_is_not_overwritten(finished_run: Path) -> None:
    before = {p.name: digest(p) for p in (finished_run / "checkpoints").iterdir()}
    metrics = digest(finished_run / "metrics.csv")
    assert_clean_failure(run_cli_in_process(f"hydra.run.dir={finished_run}", "trainer.max_epochs=1"), USER_EXIT,
                         "already holds a run")
    assert {p.name: digest(p) for p in (finished_run / "checkpoints").iterdir()} == before
    assert digest(finished_run / "metrics.csv") == metrics


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert_clean_failure(run_cli_in_process(f"hydra.run.dir={blocker / 'run'}"), USER_EXIT, "cannot write the run dir")


def test_disk_full_while_writing_a_checkpoint_keeps_the_old_one(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    import shutil

    shutil.copytree(finished_run, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    before = {path.name: digest(path) for path in last.parent.iterdir()}
    # A file-size limit below the checkpoint's size: the write fails part-way, as on a full disk.
    limit_kib = last.stat().st_size // 1024 // 4
    command = (f"ulimit -f {limit_kib}; exec {sys.executable} -m trainer hydra.run.dir={run_dir} "
               f"trainer.max_epochs=2 trainer.extend_schedule=true trainer.resume=auto {' '.join(SHORT)}")
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=300)
    # best.pt (a better epoch 2) or last.pt: whichever is written first fails, and neither changes
    assert_clean_failure(result, USER_EXIT, f"could not write {last.parent}/")
    assert {path.name: digest(path) for path in last.parent.iterdir()} == before


def test_regularizer_the_model_does_not_have(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path}", "regularization.stochastic_depth=0.2")
    assert_clean_failure(result, USER_EXIT, "has no stochastic_depth setting")


def test_divergence_exits_non_zero_naming_epoch_and_step(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path}", "optim=sgd", "optim.lr=1e12", "trainer.max_epochs=1")
    assert result.returncode == 2
    assert "non-finite loss at epoch 1, batch" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def test_a_malicious_checkpoint_given_to_resume_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {}, "config": {}, "epoch": 0, "x": Payload()}, evil)
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", f"trainer.resume={evil}")
    assert result.returncode == 2
    assert "arbitrary unpickling" in result.stderr
    assert not marker.exists()


# ---- files that are not training checkpoints, given as ckpt= or trainer.resume= (issue 14): one line each

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, digits_ckpt: Path) -> Path:
    """One file per way a `.pt` can fail to be a training checkpoint, and a run dir holding a good last.pt."""
    import warnings

    folder = tmp_path_factory.mktemp("bad")
    (folder / "text.pt").write_text("hi\n")
    (folder / "random.pt").write_bytes(bytes((i * 97 + 13) % 256 for i in range(4096)))
    (folder / "protocol4.pt").write_bytes(b"\x80\x04" + bytes(range(256)) * 4)  # torch would warn before failing
    (folder / "empty.pt").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(folder / "scripted.pt"))
    good = torch.load(digits_ckpt, weights_only=True)
    torch.save(good | {"config": "not a dict"}, folder / "string_config.pt")
    torch.save([good["model"]], folder / "a_list.pt")
    first = next(iter(good["model"]))
    torch.save(good | {"model": good["model"] | {first: torch.zeros(3, 3)}}, folder / "wrong_shape.pt")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {folder / 'pwned'}",))

    torch.save(good | {"x": Payload()}, folder / "evil.pt")
    (folder / "a_run" / "checkpoints").mkdir(parents=True)
    (folder / "a_run" / "checkpoints" / "last.pt").write_bytes(digits_ckpt.read_bytes())
    return folder


NOT_A_CHECKPOINT = "is not a checkpoint (not a file torch.save wrote)"
# (overrides with {bad} for the bad_files folder, text the one line must contain); all exit 2
CHECKPOINT_CASES = [
    (["mode=eval", "ckpt={bad}/text.pt"], NOT_A_CHECKPOINT),
    (["mode=eval", "ckpt={bad}/random.pt"], NOT_A_CHECKPOINT),
    (["mode=eval", "ckpt={bad}/protocol4.pt"], NOT_A_CHECKPOINT),
    (["mode=eval", "ckpt={bad}/empty.pt"], "is empty (0 bytes)"),
    (["mode=eval", "ckpt={bad}/scripted.pt"], "is a TorchScript export (what mode=export writes), not a training"),
    (["mode=export", "ckpt={bad}/scripted.pt"], "need a training checkpoint: a run's checkpoints/last.pt"),
    (["mode=eval", "ckpt={bad}/string_config.pt"], "its config has no model section (found a str)"),
    (["mode=eval", "ckpt={bad}/a_list.pt"], "is not a trainer checkpoint (expected keys model, config, epoch)"),
    (["mode=eval", "ckpt={bad}/wrong_shape.pt"], "weights do not fit the model its config describes"),
    (["mode=eval", "ckpt={bad}/evil.pt"], "it needs arbitrary unpickling, which could run code"),
    (["mode=eval", "ckpt={bad}/nowhere.pt"], "checkpoint not found"),
    (["mode=eval", "ckpt={bad}/a_run"], "is a directory, not a checkpoint file; did you mean {bad}/a_run/checkpoints/"),
    (["trainer.resume={bad}/a_run"], "is a directory, not a checkpoint file; did you mean {bad}/a_run/checkpoints/"),
    (["trainer.resume={bad}/text.pt"], NOT_A_CHECKPOINT),
]


@pytest.mark.parametrize(("overrides", "expected"), CHECKPOINT_CASES)
def test_files_that_are_not_training_checkpoints(bad_files: Path, tmp_path: Path, overrides: list[str],
                                                 expected: str) -> None:
    before = tree_digest(bad_files)
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "logger=none",
                     *(o.format(bad=bad_files) for o in overrides))
    assert_clean_failure(result, USER_EXIT, expected.format(bad=bad_files))
    assert "weights_only" not in result.stderr and "Warning" not in result.stderr
    assert tree_digest(bad_files) == before  # nothing written over, and nothing unpickled ran
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tensorboard_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "logger=tensorboard",
                                f"logger.tensorboard.log_dir={blocker / 'tb'}", "trainer.max_epochs=1")
    assert_clean_failure(result, USER_EXIT, f"cannot write TensorBoard's event files in {blocker / 'tb'}")
    assert blocker.read_text() == "not a folder"


def test_a_one_class_image_folder_says_a_classifier_needs_two(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", classes=("cat",))
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", "data=imagefolder", f"data.train_dir={train}",
                     "data.num_classes=2", "logger=none")
    assert_clean_failure(result, USER_EXIT, "has one class folder (cat), but a classifier needs at least 2 classes")
    assert "num_classes=1" not in result.stderr


def test_a_full_disk_when_tensorboard_opens_its_file_is_one_output_error(tmp_path: Path, monkeypatch) -> None:
    import errno

    import torch.utils.tensorboard

    from trainer.build import build_logger
    from trainer.errors import OutputError

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", full_disk)
    with pytest.raises(OutputError, match="cannot write TensorBoard's event files in .*: No space left on device"):
        build_logger({"_target_": "trainer.reporting.loggers.TensorBoardLogger"}, str(tmp_path))
