"""`pytest -m "not e2e"` runs the fast unit tests alone: everything under tests/e2e/ is marked `e2e` automatically.

Shared helpers and fixtures: compose configs in-process, run the real CLI in a subprocess, tiny data sets, toys.
tests/unit/ holds the in-process tests; tests/e2e/ runs the real CLI or a script in a subprocess. Tests import what
they need from here (`from tests.conftest import ...`); the longer helpers live in tests/helpers/ and are re-exported
below. No test module imports another.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.data_files import (
    FOLDERS,
    MNIST_FILES,
    STATS,
    TREE_COLOURS,
    data_overrides,
    write_cifar,
    write_idx,
    write_image_tree,
    write_mnist_like,
)
from tests.helpers.schedules import cos_anneal, onecycle
from tests.helpers.toy_data import digits_module, image_batches, toy_batches
from tests.helpers.toy_models import NaNAfter, convnet, mlp

__all__ = [  # the helpers tests import from here
    "CONFIGS", "FOLDERS", "MNIST_FILES", "NaNAfter", "REPO", "SHARED_DATA", "STATS", "TREE_COLOURS", "assert_real_png",
    "build", "compose", "convnet", "cos_anneal", "data_overrides", "digits_module", "image_batches", "mlp", "onecycle",
    "digest", "read_csv", "read_json", "run_cli", "run_cli_in_process", "toy_batches", "tree_digest",
    "write_checkpoint", "write_cifar", "write_idx",
    "write_image_tree", "write_mnist_like",
]

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
E2E = Path(__file__).resolve().parent / "e2e"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, torch in each worker (and in the CLI subprocesses it starts) gets the worker's share of
    the CPU cores: `-n auto` starts one worker per core, and torch's default of every core per worker makes tiny
    runs spin threads against each other (on 2 cores, about twice the CPU time a run needs). An OMP_NUM_THREADS
    set by the caller is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers and "OMP_NUM_THREADS" not in os.environ:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # what the subprocesses' torch starts with
        torch.set_num_threads(threads)  # this process imported torch already (tests.helpers)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
    needs_cuda = [item for item in items if item.get_closest_marker("cuda")]
    if needs_cuda:  # tests marked `cuda` skip without a CUDA device (scripts/gpu_check.sh runs them on one)
        import torch

        if not torch.cuda.is_available():
            for item in needs_cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device (marked cuda)"))


# ---- configs and the CLI

def compose(*overrides: str):
    """The config `python -m trainer <overrides>` would run with (without Hydra's own node)."""
    from trainer.cli import compose_config

    return compose_config(overrides)


@functools.cache
def validated_once(*overrides: str):
    """The validated config of `overrides`, composed once per process and shared: read it, or copy it (`composed`)."""
    from trainer.schema import validate

    cfg = compose(*overrides)
    validate(cfg)
    return cfg


def composed(*overrides: str, values: dict[str, object] | None = None):
    """`compose(*overrides)`, validated, composed once per process (a compose costs ~0.3 s): a copy of its own,
    with `values` set by dotted key (`{"optim.weight_decay": 0.05}`) past validation: pass valid ones."""
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(validated_once(*overrides))
    for key, value in (values or {}).items():
        OmegaConf.update(cfg, key, value)
    return cfg


def build(*overrides: str):
    """The data module of the validated config of `overrides`."""
    from trainer.build import build_data
    from trainer.schema import validate

    cfg = compose(*overrides)
    validate(cfg)
    return build_data(cfg)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, report: bool = False,
            full_error: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m trainer ARGS` as a user would, with plain (non-terminal) output.

    The end-of-run figures cost seconds per run; tests that check them pass `report=True`. `full_error` sets
    HYDRA_FULL_ERROR=1 (otherwise it is unset, whatever the calling shell has).
    """
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | ({"HYDRA_FULL_ERROR": "1"}
                                                                              if full_error else {})
    extra = [] if report else ["trainer.report=false"]
    return subprocess.run([sys.executable, "-m", "trainer", *args, *extra], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_cli_in_process(*args: str, report: bool = False) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` as one `trainer.cli.main()` call in this process, its output captured: for the
    many bad inputs that stop before training, without paying a new interpreter and torch import each time.

    Returns what `run_cli` does; an exception that escapes `main` becomes a traceback on stderr and exit code 1,
    as the interpreter would print it.
    """
    import contextlib
    import io
    import traceback
    from unittest import mock

    from trainer import cli

    out, err = io.StringIO(), io.StringIO()
    argv = ["trainer", *args, *([] if report else ["trainer.report=false"])]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    code = 0
    with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ, env, clear=True), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(REPO):
        try:
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# ---- the files a run leaves

def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def digest(path: Path) -> str:
    """The sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too: .hydra/, .lock) and its sha256: equal means byte-identical."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def assert_real_png(path: Path) -> None:
    """A PNG that opens, and is larger than a thumbnail."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        assert image.width > 200 and image.height > 200, (path, image.size)


def write_checkpoint(path: Path, *overrides: str, drop: tuple[str, ...] = (), **replace) -> Path:
    """A checkpoint as a training run writes it (model, config, epoch, classes, inference), for `overrides`, with
    an untrained seeded model; `drop` leaves entries out, `replace` swaps them."""
    import torch
    from omegaconf import OmegaConf

    from trainer.build import build_data, build_model
    from trainer.schema import validate
    from trainer.training.checkpoint import save_checkpoint

    cfg = compose(*overrides)
    validate(cfg)
    datamodule = build_data(cfg)
    torch.manual_seed(0)
    payload = {"config": OmegaConf.to_container(cfg, resolve=True), "model": build_model(cfg.model).state_dict(),
               "epoch": 1, "classes": list(datamodule.classes), "inference": datamodule.inference_info()}
    payload = {key: value for key, value in (payload | replace).items() if key not in drop}
    save_checkpoint(payload, path)
    return path


# ---- fixtures

@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def single_thread():
    """torch on one thread: tiny models step faster on one, and far faster on a busy machine (no thread spin)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> Path:
    """An untrained default (digits) checkpoint, written in-process."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "digits.pt")


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """Five val digits saved as 8x8 grey PNGs (pixels 0..16 -> 0..255), and their normalised val tensors."""
    folder = tmp_path_factory.mktemp("pngs")
    module = digits_module()
    images, _, _, val_idx = module.split()
    for n, index in enumerate(val_idx[:5].tolist()):
        pixels = (images[index, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{n}.png")
    module.setup()
    return folder, module.val_set.tensors[0][:5]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """`mlflow_store(folder)` puts an empty MLflow SQLite store at `folder/mlflow.db` (where `paths.output_root=folder`
    points logger=mlflow) and returns its URI. A fresh store runs MLflow's ~50 schema migrations (seconds); this one
    copies a store migrated once per test session, shared by the xdist workers."""
    import fcntl
    import shutil

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above every worker's own
    template = shared / "mlflow-empty.db"
    with open(shared / "mlflow-empty.db.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as trainer.reporting.trackers does
            from mlflow.tracking import MlflowClient

            building = shared / "mlflow-building.db"
            MlflowClient(f"sqlite:///{building}").search_experiments()  # creates the schema
            building.rename(template)

    def copy_to(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return copy_to
