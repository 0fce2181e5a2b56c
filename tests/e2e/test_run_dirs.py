"""One run per run dir, through the real CLI: concurrent default runs get their own dirs, a locked dir is refused,
a refused run leaves its dir byte-identical, and a run that fails before any output leaves no dir behind."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, read_json, run_cli_in_process, tree_digest

TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "logger=none",
        "trainer.progress=none")


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", *TINY)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow  # two whole runs side by side; tests/unit/test_run_dirs.py covers the naming and the lock
def test_concurrent_default_runs_get_a_dir_each(tmp_path: Path) -> None:
    root = tmp_path / "out"
    now = datetime.now()
    taken = [root / f"{t:%Y-%m-%d}" / f"{t:%H-%M-%S}" for t in (now + timedelta(seconds=s) for s in range(-1, 120))]
    for path in taken:  # every default name of the next two minutes exists: each run needs a suffix
        path.mkdir(parents=True)
    command = [sys.executable, "-m", "trainer", f"paths.output_root={root}", *TINY, "trainer.report=false",
               "trainer.num_threads=1"]
    runs = [subprocess.Popen([*command, f"seed={seed}"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for run in runs:
        assert run.wait(timeout=240) == 0, run.stderr.read()
    run_dirs = sorted(p.parent for p in root.rglob(".hydra"))
    assert len(run_dirs) == 2 and all(p.name.rsplit("-", 1)[-1] in ("1", "2") for p in run_dirs), run_dirs
    assert all(not any(path.iterdir()) for path in taken)  # the dirs that existed are left alone
    seeds = set()
    for run_dir in run_dirs:  # each dir holds one run: its overrides, config, summary and lock agree
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["seed"] == seed
        assert Path(read_json(run_dir / "summary.json")["run_dir"]).resolve() == run_dir.resolve()
        assert read_json(run_dir / ".lock")["pid"] in {run.pid for run in runs}
        seeds.add(seed)
    assert seeds == {1, 2}


def test_a_second_run_into_a_locked_dir_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = (f"from pathlib import Path; from trainer.run_dirs import claim; claim(Path({str(run_dir)!r}), "
            "fresh=False); print('locked', flush=True); import time; time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = tree_digest(run_dir)
        result = run_cli_in_process(f"hydra.run.dir={run_dir}", *TINY)
        assert result.returncode == 2, result.stderr
        assert len(error_lines(result)) == 1 and f"is in use by another run (pid {holder.pid} " in result.stderr
        assert tree_digest(run_dir) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("mode", ["train", "eval", "summary"])
def test_a_refused_run_leaves_the_finished_run_byte_identical(finished_run: Path, mode: str) -> None:
    before = tree_digest(finished_run)
    assert {".hydra/overrides.yaml", "train.log", ".lock", "summary.json"} <= before.keys()
    extra = {"train": [], "eval": ["mode=eval", f"ckpt={finished_run / 'checkpoints' / 'best.pt'}"],
             "summary": ["mode=summary"]}[mode]
    result = run_cli_in_process(f"hydra.run.dir={finished_run}", *TINY, "seed=7", *extra)
    assert result.returncode == 2, result.stderr
    assert error_lines(result) == [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines(result)) == 1 and "already holds a run" in result.stderr
    assert tree_digest(finished_run) == before


def test_a_run_that_fails_before_any_output_leaves_no_dir(tmp_path: Path) -> None:
    root = tmp_path / "out"
    result = run_cli_in_process(f"paths.output_root={root}", *TINY, "optim.lr=-1")
    assert result.returncode == 2 and "optim.lr" in result.stderr
    assert not root.exists()
    new, existing = tmp_path / "new" / "run", tmp_path / "existing"
    existing.mkdir()
    for run_dir in (new, existing):
        assert run_cli_in_process(f"hydra.run.dir={run_dir}", *TINY, "optim.lr=-1").returncode == 2
    assert not (tmp_path / "new").exists()
    assert existing.is_dir()  # it existed before this run: never removed
    for flags in (["--cfg", "job"], ["--help"]):
        assert run_cli_in_process(*flags, f"paths.output_root={root}").returncode == 0
    assert not root.exists()


def test_summary_says_where_it_wrote(tmp_path: Path) -> None:
    result = run_cli_in_process(f"paths.output_root={tmp_path}", "mode=summary", "trainer.progress=plain")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("wrote ") and last.endswith("model_summary.json")
    assert Path(last.removeprefix("wrote ")).is_file()
    assert Path(last.removeprefix("wrote ")).parent.parent.parent == tmp_path  # <root>/<date>/<time>/
