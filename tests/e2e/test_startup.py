"""The CLI before a run starts: `--help` and `--cfg` answer without importing torch, and a config that does not
compose is one line (or, with HYDRA_FULL_ERROR=1, Hydra's whole traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cli


def test_help_and_cfg_do_not_import_torch() -> None:
    """Each in a process of its own, as `python -m trainer` runs (it ends the process once it has answered); an exit
    function registered first reports what was imported."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED'))\n"
            "sys.argv = ['trainer', *sys.argv[1:]]\n"
            "runpy.run_module('trainer', run_name='__main__')\n")
    for args in (["--help"], ["--cfg", "job"]):
        out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "model:" in out.stdout and ("Configuration groups" in out.stdout or args[0] == "--cfg")
        assert out.stdout.strip().endswith("TORCH_NOT_LOADED")


def test_help_with_an_unknown_option_is_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "trainer", "--help", "model=nope"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("error: In 'train': Could not find 'model/nope' (options: ")
    assert len(out.stderr.strip().splitlines()) == 1 and "resnet18" in out.stderr


def test_no_thread_limit_leaves_torch_unimported() -> None:
    code = "import sys\nfrom trainer.cli import limit_threads\nlimit_threads(None, None)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(("override", "says"), [
    ("model=nope", "Could not find 'model/nope' (options: "),  # an unknown option, with the known ones
    ("trainer.nope=1", "Could not override 'trainer.nope'"),  # an unknown key
    ("optim.lr=[", "cannot parse override 'optim.lr=['"),  # an override that does not parse
])
def test_a_config_that_does_not_compose_is_one_line_through_the_real_cli(override: str, says: str) -> None:
    result = run_cli(override)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_hydra_full_error_shows_the_whole_traceback_instead() -> None:
    result = run_cli("model=nope", full_error=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "model/nope" in result.stderr
    assert not result.stderr.startswith("error:")
