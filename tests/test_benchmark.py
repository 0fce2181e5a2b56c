"""scripts/benchmark.py: the cheap parts only (the benchmark itself takes minutes and is run by hand).

Its `--help` must answer without importing torch, and a bad `--only` must fail at once, before any work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"

# Runs the script's --help in a fresh interpreter, then reports whether torch got imported.
HELP_THEN_REPORT = f"""
import runpy, sys
sys.argv = ["benchmark.py", "--help"]
try:
    runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
except SystemExit:
    pass
print("torch imported" if "torch" in sys.modules else "torch not imported")
"""


def test_help_lists_the_options_without_importing_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", HELP_THEN_REPORT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--only", "--append", "--json"):
        assert option in proc.stdout
    assert proc.stdout.strip().endswith("torch not imported")


def test_an_unknown_section_fails_before_any_benchmark() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "overhead,nonsense"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "nonsense" in proc.stderr and "importing torch" not in proc.stdout
