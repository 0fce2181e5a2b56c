"""mode=export through the CLI: a failed export exits with one line and leaves no run dir behind (the export is
staged beside the run dir and moved in only once it has succeeded; tests/unit/test_export.py checks the files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli_in_process


def fail_on_reload(*args, **kwargs):
    raise RuntimeError("cannot reload this export")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_a_failed_export_through_the_cli_leaves_no_run_dir(digits_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.jit, "load", fail_on_reload)
    result = run_cli_in_process("mode=export", f"ckpt={digits_ckpt}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "error: export.format=torchscript failed for" in result.stderr
    assert list(tmp_path.iterdir()) == []
