"""Shared helpers: compose configs in-process, and run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"


def compose(*overrides: str):
    """The config `python -m trainer <overrides>` would run with (without Hydra's own node)."""
    from trainer.cli import compose_config

    return compose_config(overrides)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, report: bool = False
            ) -> subprocess.CompletedProcess:
    """Run `python -m trainer ARGS` as a user would, with plain (non-terminal) output.

    The end-of-run figures cost seconds per run; tests that check them pass `report=True`.
    """
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    extra = [] if report else ["trainer.report=false"]
    return subprocess.run([sys.executable, "-m", "trainer", *args, *extra], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
