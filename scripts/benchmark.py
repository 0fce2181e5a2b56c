"""Benchmark the trainer: its hot loop against a hand-written PyTorch loop, its start-up, default job and data paths.

Everything runs in one invocation, so the figures are comparable (same machine, same load, same torch build):

1. overhead  steady-state training samples/s of the trainer's own hot loop (`trainer.training.loop.train_epoch` over the
             data module's train loader, set up as trainer/training/train.py sets it up) against a minimal
             hand-written loop on the same model, batch, data tensors and optimizer, in alternating rounds (CPU, 32 px).
2. job       `python -m trainer` (the default job) end to end, as a user runs it.
3. startup   `python -m trainer --help` and `--cfg job`, and whether they import torch.
4. data      one MNIST epoch with `data.in_memory=true` against the DataLoader path (0 and 2 workers).
5. gpu       ResNet-50, 224 px, batch 256, channels_last: bf16 eager and with torch.compile, fp16 with the gradient
             scaler, trainer against the hand-written loop with each side's peak memory; and one CIFAR-10 epoch on
             the GPU with `data.in_memory=true` against the DataLoader (scripts/bench_gpu.py; CUDA only).
6. imagefolder  one epoch of resnet18 at 32 px on the shared CIFAR-10 subset written as JPEGs: `python -m trainer`
             end to end against a minimal ImageFolder + DataLoader loop, per data.decoder, and the train loader alone
             (scripts/bench_imagefolder.py).

    .venv/bin/python scripts/benchmark.py               # everything (tens of minutes on 2 CPU cores)
    .venv/bin/python scripts/benchmark.py --quick       # small everything (1-2 minutes)
    .venv/bin/python scripts/benchmark.py --only overhead,startup --json bench.json
    .venv/bin/python scripts/benchmark.py --only imagefolder     # the image-folder path (several minutes)
    python3 scripts/benchmark.py --only gpu --rounds 3 --data DIR  # on a CUDA machine (scripts/gpu_check.sh)
    .venv/bin/python scripts/benchmark.py --append      # also add a dated section to BENCHMARKS.md

Each section prints a table, and a final table holds the targets with PASS or MISS. The sections live in
scripts/bench_sections.py, what they measure with in scripts/bench_measure.py. torch is imported only once a
benchmark runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmark this checkout's trainer package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_*.py modules beside this script

from bench_measure import REPO, Check, Say, Section, Table
from bench_sections import FULL, QUICK, SECTIONS, Plan
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from trainer.errors import described
from trainer.reporting.run_files import write_json

BENCHMARKS_MD = REPO / "BENCHMARKS.md"
STATUS_STYLES = {"PASS": "green", "MISS": "red", "error": "bold red"}


# ---- a result table's two renderings: rich on the console, markdown in BENCHMARKS.md


def rich_table(table: Table, styled: bool = False) -> RichTable:
    """`table` for the console; `styled`: each row coloured by its last cell (the summary's PASS, MISS, error)."""
    out = RichTable(title=table.title, title_justify="left", title_style="bold")
    for i, column in enumerate(table.columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row), style=STATUS_STYLES.get(row[-1]) if styled else None)
    return out


def markdown(table: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [f"### {table.title}", "", line(table.columns), "|" + "---|" * len(table.columns)]
    lines += [line(row) for row in table.rows]
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines)


def show(console: Console, table: Table, styled: bool = False) -> None:
    console.print(rich_table(table, styled))
    for note in table.notes:
        console.print(f"  [dim]{escape(note)}[/dim]")
    console.print()


# ---- the run: every section asked for, then the summary


def summary_table(sections: list[Section], quick: bool = False) -> Table:
    table = Table("summary", ["check", "value", "target", "result"],
                  [list(c) for s in sections for c in s.checks])
    if quick:
        table.notes = ["--quick times a few batches and runs: a check tells that the section works, not the "
                       "figure; record figures from a full run"]
    return table


def run_sections(names: list[str], plan: Plan, console: Console, say: Say) -> list[Section]:
    sections = []
    for name in SECTIONS:
        if name not in names:
            continue
        try:
            section = SECTIONS[name](plan, say)
        except Exception as err:  # one broken section must not lose the others' figures
            console.print(f"[bold red]{name} failed:[/bold red] {escape(traceback.format_exc())}")
            section = Section(name, [Table(f"{name}: failed", ["error"], [[described(err)]])],
                              [Check(name, "-", "-", "error")], {"error": traceback.format_exc()})
        sections.append(section)
        for table in section.tables:
            show(console, table)
    return sections


# ---- the record: machine, BENCHMARKS.md, JSON


def machine_info() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_average": round(os.getloadavg()[0], 2)}


def machine_line(machine: dict[str, Any]) -> str:
    load = f"load average {machine['load_average']} at start"
    if "load_average_end" in machine:
        load += f", {machine['load_average_end']} at end"
    return (f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({machine['torch_threads']} "
            f"threads), GPU: {machine['gpu'] or 'none'}, Python {machine['python']}, {load}")


def append_markdown(path: Path, sections: list[Section], machine: dict[str, Any], command: str) -> None:
    """A dated section at the end of `path`: the machine, every table, then the summary."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"## {stamp}: `{command}`", f"Machine: {machine_line(machine)}."]
    parts += [markdown(table) for section in sections for table in section.tables]
    parts.append(markdown(summary_table(sections, quick="--quick" in command.split())))
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(existing.rstrip("\n") + "\n\n" + "\n\n".join(parts) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the trainer against a hand-written PyTorch loop, and time its CLI start-up, default "
                    "job and data paths, in one invocation.")
    parser.add_argument("--quick", action="store_true", help="small everything (about 1-2 minutes on 2 CPU cores)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--append", nargs="?", const=BENCHMARKS_MD, type=Path, metavar="PATH",
                        help=f"add a dated section with the results to PATH (default: {BENCHMARKS_MD.name})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers to PATH")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the GPU section's compiled run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="timed rounds per side of every trainer-against-hand race (default: the plan's, "
                             f"{FULL.rounds}, or {QUICK.rounds} with --quick)")
    parser.add_argument("--data", type=Path, default=FULL.data_root, metavar="DIR",
                        help="the folder holding MNIST/ (data section) and cifar-10-batches-py/ (GPU section) "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown or not args.only:
        parser.error(f"--only: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(SECTIONS)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds: at least 1, not {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would wrap the tables at 80 columns
        console = Console(width=150)
    plan = replace(QUICK if args.quick else FULL, compile_mode=args.compile_mode, data_root=args.data.resolve())
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds)
    started = time.perf_counter()

    def say(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f}s  {escape(message)}[/dim]")

    say("importing torch")
    machine = machine_info()
    console.print(f"Machine: {escape(machine_line(machine))}\n")
    sections = run_sections(args.only, plan, console, say)
    show(console, summary_table(sections, quick=args.quick), styled=True)
    machine["load_average_end"] = round(os.getloadavg()[0], 2)  # other processes skew every figure: say how busy
    say(f"done in {time.perf_counter() - started:.0f} s (load average now {machine['load_average_end']})")

    command = shlex.join(["scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    if args.append:
        append_markdown(args.append, sections, machine, command)
        console.print(f"appended to {args.append}")
    if args.json:
        write_json(args.json, {"command": command, "date": datetime.now().isoformat(timespec="seconds"),
                               "machine": machine, "sections": {s.name: s.raw for s in sections},
                               "summary": [c._asdict() for s in sections for c in s.checks]})
        console.print(f"wrote {args.json}")
    return 1 if any(c.status == "error" for s in sections for c in s.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
