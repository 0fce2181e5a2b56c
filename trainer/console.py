"""What a person sees: a header, a live progress bar on a terminal (plain lines elsewhere), a summary table.

Everything shown is also written to the run's `train.log` through the standard `logging` module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger("trainer")


class RunConsole:
    def __init__(self, progress: str = "auto") -> None:
        self.console = Console(highlight=False)
        self.quiet = progress == "none"
        self.live = progress == "rich" or (progress == "auto" and self.console.is_terminal)

    def info(self, message: str, style: str | None = None) -> None:
        log.info(message)
        if not self.quiet:
            self.console.print(message, style=style, markup=False, soft_wrap=True)

    def table(self, title: str, rows: dict[str, object]) -> None:
        for key, value in rows.items():
            log.info("%s: %s", key, value)
        if self.quiet:
            return
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in rows.items():
            table.add_row(key, str(value))
        self.console.print(table)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int, float | None], None]]:
        """Yield `update(steps_done, loss_or_None)`; it redraws a bar only on a terminal."""
        if not self.live or self.quiet:
            yield lambda done, loss: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, loss="-", rate="")

            def update(done: int, loss: float | None) -> None:
                fields = {}
                if loss is not None:
                    elapsed = bar.tasks[task].elapsed or 0.0
                    fields = {"loss": f"{loss:.4f}", "rate": f"{done / elapsed:.1f} it/s" if elapsed else ""}
                bar.update(task, completed=done, **fields)

            yield update
