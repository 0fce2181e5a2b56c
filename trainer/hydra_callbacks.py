"""Hydra callbacks: checks that must run before Hydra itself starts writing into the run dir."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _require_writable(folder: str) -> None:
    """Create `folder` and write a probe file in it; otherwise one line on stderr and exit code 2."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        print(f"error: cannot write the run dir {folder}: {err.strerror or err}; "
              "choose another with hydra.run.dir=... (or paths.output_root=...)", file=sys.stderr)
        sys.exit(2)


class RequireWritableOutput(Callback):
    """Fail with a clear line, not Hydra's traceback, when the run or sweep dir cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(config.hydra.sweep.dir)
