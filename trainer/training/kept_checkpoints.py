"""The checkpoints a run keeps beside last.pt: best.pt, the top-k epochs and the periodic ones.

best.pt and the top-k files are written in two phases: first as `<name>.pending-E` (E the epoch), then, once
last.pt records the epoch, renamed into place, and only then are the files that dropped out of the top k
deleted. A kill at any moment leaves files that last.pt's state accounts for: on resume, `reconcile` finishes
what the state recorded and removes what it did not. A resume into another run dir brings the source run's
kept files along (`adopt`), so that the new dir's best.pt is the run's best, not only the best since resuming.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.reporting.run_files import TEMPORARY_NAMES, atomic_write
from trainer.training.selection import Monitor, update_top_k

if TYPE_CHECKING:
    from trainer.training.checkpoint import TrainState

BEST = "best.pt"
PENDING = ".pending-"


class KeptCheckpoints:
    """Which files an epoch adds or drops (`plan`), their two-phase write (`pending`, `commit`) and the repairs
    a resume makes (`reconcile`, `adopt`)."""

    def __init__(self, folder: Path, monitor: Monitor, top_k: int, every_n_epochs: int | None) -> None:
        self.folder, self.monitor, self.top_k, self.every_n_epochs = folder, monitor, top_k, every_n_epochs

    def plan(self, state: TrainState, is_best: bool) -> tuple[list[str], list[str], list[str]]:
        """For the epoch just ended: the selected files to write (best.pt, its top-k file), the periodic ones,
        and the top-k files it evicts; updates `state.top_k`."""
        epoch, value = state.epoch, self.monitor.value(state.history[-1])
        before = {entry["file"] for entry in state.top_k}
        state.top_k, in_top_k = update_top_k(state.top_k, epoch, value, self.top_k if self.top_k > 1 else 0,
                                              self.monitor)
        selected = [BEST] if is_best and self.top_k >= 1 else []
        if in_top_k:
            selected.append(self.monitor.file_name(epoch, value))
        every = self.every_n_epochs
        periodic = [f"epoch={epoch}.pt"] if every and epoch % every == 0 else []
        evicted = sorted(before - {entry["file"] for entry in state.top_k})
        return selected, periodic, evicted

    def pending(self, name: str, epoch: int) -> Path:
        """Where a selected file is written before last.pt records its epoch."""
        return self.folder / f"{name}{PENDING}{epoch}"

    def commit(self, pending: list[Path], evicted: list[str]) -> None:
        """After last.pt: rename the pending files into place, then delete the evicted top-k files."""
        for path in pending:
            os.replace(path, self.folder / path.name.split(PENDING)[0])
        for name in evicted:
            (self.folder / name).unlink(missing_ok=True)

    def reconcile(self, state: TrainState) -> None:
        """At resume: commit the pending files of the epoch the state ended with (the kill came after last.pt),
        drop those of an epoch it never recorded, top-k files it no longer lists, and the hidden temporary files
        of writes and links a kill cut short (the run dir is locked: no other process is writing them)."""
        listed = {entry["file"] for entry in state.top_k}
        for pattern in TEMPORARY_NAMES:
            for path in self.folder.glob(pattern):
                path.unlink(missing_ok=True)
        for path in sorted(self.folder.glob(f"*{PENDING}*")):
            name, _, epoch = path.name.partition(PENDING)
            wanted = name in listed or (name == BEST and state.best_epoch == state.epoch)
            if epoch == str(state.epoch) and wanted:
                os.replace(path, self.folder / name)
            else:
                path.unlink(missing_ok=True)
        for path in self.folder.glob("epoch=*-*.pt"):
            if path.name not in listed:
                path.unlink(missing_ok=True)

    def adopt(self, source: Path, state: TrainState) -> list[str]:
        """Copy another run dir's best.pt and top-k files (those the resumed state lists) into this one when it
        has none of its own; returns the names copied. A source best.pt of another epoch than the state's best
        (from after the resumed checkpoint) is left behind."""
        from trainer.training.checkpoint import load_checkpoint

        names = [entry["file"] for entry in state.top_k]
        best = source / BEST
        if state.best_epoch and best.is_file() and load_checkpoint(best)["epoch"] == state.best_epoch:
            names.append(BEST)
        copied = []
        for name in names:
            src, dst = source / name, self.folder / name
            if src.is_file() and not dst.exists():
                with src.open("rb") as handle:
                    atomic_write(dst, lambda out, handle=handle: shutil.copyfileobj(handle, out))
                copied.append(name)
        return copied
