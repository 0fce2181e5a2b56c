"""What a person sees: a header, a live progress bar on a terminal (plain lines elsewhere), a summary table.

Everything shown is also written to the run's `train.log` through the standard `logging` module.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.tree import Tree

log = logging.getLogger("trainer")

PLAIN_EVERY_S = 30.0  # without a terminal, a progress line at most this often (a long epoch in a SLURM log)


# Set by the CLI for a sweep job that runs beside others (the joblib launcher): its console lines carry it, as
# `[job 3] epoch 1/6 ...`, so that interleaved jobs can be told apart. Each job process sets its own.
line_prefix = ""


class RunConsole:
    def __init__(self, progress: str = "auto") -> None:
        self.console = Console(highlight=False)
        self.quiet = progress == "none"
        self.live = progress == "rich" or (progress == "auto" and self.console.is_terminal)
        self.prefix = line_prefix

    def info(self, message: str, style: str | None = None) -> None:
        log.info(message)
        if not self.quiet:
            self.console.print(self.prefix + message, style=style, markup=False, soft_wrap=True)

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

    def tree(self, tree: Tree) -> None:
        """Print a rich Tree (e.g. `config_tree(cfg)`) unless quiet; train.log gets config_tree.txt instead."""
        if not self.quiet:
            self.console.print(tree)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Callable[[int, float | None], None]]:
        """Yield `update(steps_done, loss_or_None)`: it redraws a bar on a terminal; elsewhere (a pipe, a SLURM
        log) it prints a plain line at most every PLAIN_EVERY_S seconds, so that a long epoch is not silent."""
        if self.quiet:
            yield lambda done, loss: None
            return
        if not self.live:
            yield self.plain_progress(description, total)
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, loss="-", rate="")

            def update(done: int, loss: float | None) -> None:
                fields = {}
                if loss is not None:
                    elapsed = bar.tasks[task].elapsed or 0.0
                    fields = {"loss": f"{loss:.4f}", "rate": f"{done / elapsed:.1f} it/s" if elapsed else ""}
                bar.update(task, completed=done, **fields)

            yield update


    def plain_progress(self, description: str, total: int) -> Callable[[int, float | None], None]:
        """`update(done, loss)` that prints `<description>: done/total batches, loss, it/s, eta` now and then."""
        start = last = time.monotonic()

        def update(done: int, loss: float | None) -> None:
            nonlocal last
            now = time.monotonic()
            if loss is None or done >= total or now - last < PLAIN_EVERY_S:
                return
            last, rate = now, done / max(now - start, 1e-9)
            self.info(f"  {description}: {done}/{total} batches, loss {loss:.4f}, {rate:.1f} it/s, "
                      f"eta {(total - done) / rate:.0f} s")

        return update


def config_tree(cfg: DictConfig, title: str = "config") -> Tree:
    """The composed config as a rich Tree: run-level values first, then one branch per config group."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that resolves only inside a Hydra run
        data = OmegaConf.to_container(cfg, resolve=False)
    root = Tree(f"[bold]{title}[/bold]")
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if scalars:
        _add_branch(root, "run", scalars)
    for key, value in data.items():
        if isinstance(value, dict):
            _add_branch(root, key, value)
    return root


def write_config_tree(cfg: DictConfig, path: Path) -> Tree:
    """Write `config_tree(cfg)` as plain text to `path` (config_tree.txt in the run dir) and return the tree."""
    tree = config_tree(cfg)
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, force_terminal=False, highlight=False).print(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue())
    return tree


def _add_branch(parent: Tree, name: str, node: dict[str, Any]) -> None:
    branch = parent.add(f"[bold cyan]{name}[/bold cyan]")
    for key, value in node.items():
        if isinstance(value, dict):
            _add_branch(branch, key, value)
        else:
            text = f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}"
            branch.add(escape(text), highlight=False)


def option_name(group: str, target: str) -> str:
    """The option picked for a config group (e.g. `resnet50`), or the `_target_`'s last name outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return target.rsplit(".", 1)[-1]


def format_value(value: object) -> str:
    """A table cell: floats to 4 decimals (large ones with thousands separators), ints grouped, phase times."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key} {item:.2f} s" for key, item in value.items())  # summary.json's phase_s
    if isinstance(value, float):
        return f"{value:.4f}" if value < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
