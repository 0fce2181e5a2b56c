"""scripts/benchmark.py: the cheap parts only (the benchmark itself takes minutes and is run by hand).

Its `--help` must answer without importing torch, and a bad `--only` must fail at once, before any work; its checks,
its two renderings of a result table, its reading of `-X importtime` and its skipped sections are checked here too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "benchmark.py"

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


# The script's own modules, imported as the script imports them (it puts scripts/ on sys.path); none imports torch.
sys.path.insert(0, str(SCRIPT.parent))
import bench_measure  # noqa: E402
import bench_sections  # noqa: E402
import benchmark  # noqa: E402


def test_a_check_passes_when_its_value_reaches_the_target() -> None:
    check = bench_measure.check
    assert check("ratio", 0.98, 0.97, at_least=True) == ("ratio", "0.98", "≥ 0.97", "PASS")
    assert check("ratio", 0.969, 0.97, at_least=True).status == "MISS"
    assert check("wall", 7.9, 8.0, at_least=False, unit=" s") == ("wall", "7.9 s", "≤ 8 s", "PASS")
    assert check("wall", 10.6, 8.0, at_least=False, unit=" s").status == "MISS"
    assert check("gpu", None, 0.97, at_least=True, missing="skipped") == ("gpu", "-", "≥ 0.97", "skipped")


def test_a_result_table_renders_as_markdown_and_as_a_rich_table() -> None:
    table = bench_measure.Table("summary", ["check", "result"], [["a | b", "PASS"], ["c", "MISS"]], ["a note"])
    assert benchmark.markdown(table).splitlines() == [
        "### summary", "", "| check | result |", "|---|---|", "| a \\| b | PASS |", "| c | MISS |", "", "- a note"]
    rich = benchmark.rich_table(table, styled=True)
    assert [column.header for column in rich.columns] == ["check", "result"]
    assert [row.style for row in rich.rows] == ["green", "red"]


def test_a_skipped_section_says_why_in_a_full_row() -> None:
    table = bench_measure.Table("5. GPU", ["torch.compile", "trainer", "hand", "ratio"])
    section = bench_measure.skipped("gpu", table, "no CUDA device", "GPU overhead", 0.97)
    assert section.tables[0].rows == [["-", "skipped: no CUDA device", "-", "-"]]
    assert [c.status for c in section.checks] == ["skipped"]


def test_importtime_output_gives_the_largest_root_packages() -> None:
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       100 |        300 |   hydra._internal",
        "import time:       200 |      5000 | hydra",
        "import time:        50 |      2000 | omegaconf",
        "import time:        10 |      9000 | trainer",
        "import time:         5 |         5 | site",
    ])
    imported = bench_measure.imports(stderr)
    assert imported[0] == ("hydra._internal", 300)
    assert bench_measure.largest_packages(imported, count=2) == [("hydra", 5.0), ("omegaconf", 2.0)]


def test_the_gpu_section_is_skipped_with_its_line_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the section would run")
    section = bench_sections.bench_gpu(bench_sections.QUICK, say=lambda message: None)
    assert section.tables[0].rows == [["-", "skipped: no CUDA device", "-", "-", "-", "-"]]
    assert [(c.name, c.status) for c in section.checks] == [("GPU overhead (trainer / hand)", "skipped")]
