"""`python -m trainer.compare` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_module_entrypoint_rejects_a_dir_that_is_not_a_run(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "trainer.compare", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a run dir" in result.stderr and not (REPO / "compare.png").exists()
