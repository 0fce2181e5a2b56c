"""The run's reporting hooks (rank 0 only): metrics.csv, logger scalars, the epoch line, throughput, the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.reporting.run_files import write_metrics_csv
from trainer.training.hooks import EpochEvent, Hook, StepEvent

if TYPE_CHECKING:
    from trainer.reporting.console import RunConsole
    from trainer.training.checkpoint import TrainState
    from trainer.training.setup import RunSetup
    from trainer.training.timing import PhaseTimes


class MetricsFile(Hook):
    """metrics.csv, rewritten from the whole history after every epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.csv"

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        write_metrics_csv(self.path, state.history)


class LoggerScalars(Hook):
    """The run's curves to its loggers, all at x = the global optimizer step: every trainer.log_every_n_steps
    steps the epoch's running mean loss so far (train/loss_step) and the lr; at each epoch's end its metrics
    (metrics.csv's `step` column); the test pass's scores at the last step. Closes the loggers at the end."""

    def __init__(self, run: RunSetup, logger: Any) -> None:
        self.run, self.logger = run, logger
        self.every = run.cfg.trainer.log_every_n_steps

    def after_step(self, state: TrainState, step: StepEvent) -> None:
        if state.global_step % self.every == 0:
            scalars = {"train/loss_step": step.stats.mean_loss(), "lr": self.run.optimizer.param_groups[0]["lr"]}
            self.logger.log_scalars(scalars, state.global_step, every_step=True)

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        scalars = {"train/loss": epoch.train.loss, "train/acc": epoch.train.acc, "val/loss": epoch.val.loss,
                   "val/acc": epoch.val.acc, "lr": epoch.lr, "throughput": epoch.train.samples_per_s}
        if epoch.val_ema is not None:
            scalars |= {"val_ema/loss": epoch.val_ema.loss, "val_ema/acc": epoch.val_ema.acc}
        self.logger.log_scalars(scalars, state.global_step)

    def at_end(self, state: TrainState) -> None:
        """The test pass's scores (logged at the last step), then close the loggers."""
        test = state.test or {}
        scalars = {f"test/{name}": test.get(f"test_{name}") for name in ("acc", "loss", "top5")}
        if test.get("test_acc") is not None:
            self.logger.log_scalars({k: v for k, v in scalars.items() if v is not None}, state.global_step)
        self.logger.close()


class EpochLine(Hook):
    """One console line per epoch: losses, accuracies, lr, throughput, and a mark on a new best."""

    def __init__(self, console: RunConsole, max_epochs: int) -> None:
        self.console, self.max_epochs = console, max_epochs

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        train, val, ema = epoch.train, epoch.val, epoch.val_ema
        self.console.info(
            f"epoch {epoch.epoch:>3}/{self.max_epochs}  train loss {train.loss:.4f} acc {train.acc:.4f}  "
            f"val loss {val.loss:.4f} acc {val.acc:.4f}" + (f" top5 {val.top5:.4f}" if val.top5 is not None else "")
            + (f"  ema acc {ema.acc:.4f}" if ema is not None else "")
            + f"  lr {epoch.lr:.3g}  {train.samples_per_s:,.0f} samples/s" + ("  *best" if epoch.is_best else ""))


class Throughput(Hook):
    """Training samples per second over the epochs this process ran (for summary.json)."""

    def __init__(self) -> None:
        self.samples = self.seconds = 0.0

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        self.samples += epoch.train.samples
        self.seconds += epoch.train.seconds

    @property
    def samples_per_s(self) -> float | None:
        return round(self.samples / self.seconds, 1) if self.seconds else None


class RunReport(Hook):
    """At the end: figures and per-class scores of the selected weights (best.pt's) on the test split, or the val
    split of a data set without one (trainer/reporting/report.py), with the test pass's test-time augmentation.

    It draws the predictions that the pass scoring those weights collected (`state.predictions`: see
    trainer/training/scoring.py), and reads the split again only when there are none."""

    def __init__(self, run: RunSetup, run_dir: Path, logger: Any, times: PhaseTimes) -> None:
        self.run, self.run_dir, self.logger, self.times = run, run_dir, logger, times

    def at_end(self, state: TrainState) -> None:
        from trainer.reporting.report import write_run_report
        from trainer.training.scoring import split_batches

        run, data, tcfg = self.run, self.run.datamodule, self.run.cfg.trainer
        split = "test" if data.test_set is not None else "val"
        with self.times.phase("report"):
            # rank 0 alone reports, on the whole split (under torchrun each rank's own loaders hold its shard)
            batches = None if state.predictions is not None else split_batches(
                data, split, tcfg, run.device.type == "cuda", run.device)
            write_run_report(self.run_dir, state.history, run.model, batches,
                             list(data.classes), run.precision, self.logger, run.cfg, split=split,
                             tta=run.cfg.eval.tta, log_graph=self.logger.graph, predictions=state.predictions)


def reports(tcfg: Any) -> bool:
    """Whether a run writes the end-of-run report: trainer.report, with saved checkpoints (it describes best.pt)."""
    return bool(tcfg.report and tcfg.save_checkpoints)


def reporting_hooks(run: RunSetup, run_dir: Path, console: RunConsole, logger: Any, times: PhaseTimes) -> list[Hook]:
    """Rank 0's reporting hooks, in order: metrics.csv, the report (with trainer.report and saved checkpoints:
    it reads best.pt), the logger's scalars, the epoch line. The report logs its figures before LoggerScalars
    closes the logger at the end."""
    tcfg = run.cfg.trainer
    report = [RunReport(run, run_dir, logger, times)] if reports(tcfg) else []
    return [MetricsFile(run_dir), *report, LoggerScalars(run, logger), EpochLine(console, tcfg.max_epochs)]
