"""The console: plain progress lines where there is no terminal, and nothing when quiet."""

from __future__ import annotations

import io

from rich.console import Console

from trainer.reporting import console as console_module
from trainer.reporting.console import RunConsole


def captured(progress: str) -> tuple[RunConsole, io.StringIO]:
    out = io.StringIO()
    console = RunConsole(progress)
    console.console = Console(file=out, highlight=False, width=120)
    return console, out


def test_a_piped_epoch_prints_a_plain_line_now_and_then(monkeypatch) -> None:
    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 0.0)
    console, out = captured("plain")
    with console.progress("epoch 1/3", 100) as update:
        update(10, None)  # no loss read at this step: nothing to say
        update(20, 0.5)
        update(100, 0.25)  # the epoch's own line follows: no progress line at the end
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("  epoch 1/3: 20/100 batches, loss 0.5000,")
    assert "it/s, eta " in lines[0]


def test_progress_lines_wait_their_interval_and_quiet_prints_none(monkeypatch) -> None:
    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 3600.0)
    console, out = captured("plain")
    with console.progress("epoch 1/3", 100) as update:
        update(20, 0.5)
    quiet, quiet_out = captured("none")
    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 0.0)
    with quiet.progress("epoch 1/3", 100) as update:
        update(20, 0.5)
    assert out.getvalue() == "" and quiet_out.getvalue() == ""


def test_a_parallel_sweep_jobs_lines_carry_its_job_number(monkeypatch) -> None:
    from omegaconf import OmegaConf

    from trainer.cli import label_parallel_job

    monkeypatch.setattr(console_module, "line_prefix", "")
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    label_parallel_job(joblib, 3)
    console, out = captured("plain")
    console.info("epoch 1/6")
    assert out.getvalue() == "[job 3] epoch 1/6\n"
    label_parallel_job(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}), 3)
    assert RunConsole("plain").prefix == ""  # jobs one after another do not interleave


def test_validation_batches_advance_the_bar_after_the_model_before() -> None:
    from trainer.training.scoring import counted

    seen: list[tuple[int, float | None]] = []
    batches = list(counted(iter("abc"), lambda done, loss: seen.append((done, loss)), before=2))
    assert batches == ["a", "b", "c"] and seen == [(3, None), (4, None), (5, None)]  # the EMA pass follows the model's
