"""One run per run dir: a fresh dir for every default run, a lock while a run uses its dir, refusals that touch nothing.

Torch-free: the Hydra callback (trainer/hydra_callbacks.py) calls it before Hydra writes `.hydra/` or `train.log`.

- `claim_new`: the first of `PATH`, `PATH-1`, `PATH-2`... that this process creates with `mkdir` (atomic: two runs
  started in the same second never share a dir).
- `refuse_to_overwrite` / `refuse_sweep_dir`: a dir that already holds a run (or a sweep) is never written into,
  except by `trainer.resume=auto` or a resume from the dir's own `checkpoints/last.pt`.
- `RunLock`: an `fcntl.flock` on `<dir>/.lock`, held while the run lives (the OS drops it on exit or crash); the
  holder writes its pid and start time there, so that a second run into the dir can say who holds it.
- `release_claims`: when the invocation failed, the dirs it created that hold nothing but bookkeeping (Hydra's
  `.hydra/`, `train.log`, the lock, `config_tree.txt`) are removed, with the parents it created; a used dir
  whose results the call did not change gets its bookkeeping back (`Bookkeeping`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import ConfigError, OutputError

RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.csv", "summary.json")  # a training run's
# the other modes' results
MODE_FILES = ("eval.json", "predictions.csv", "export.json", "model_summary.json", "lr_find.json")
SWEEP_FILES = ("multirun.yaml", "sweep_summary.csv", "optimization_results.yaml")
LOCK_NAME = ".lock"
BOOKKEEPING = frozenset({".hydra", "train.log", LOCK_NAME, "config_tree.txt", "multirun.yaml"})


class RunDirInUse(ConfigError):
    """Another live process holds the run dir's lock."""


def held_files(run_dir: Path) -> list[str]:
    """The result files (of training or of another mode) that `run_dir` already holds."""
    return [name for name in (*RUN_FILES, *MODE_FILES) if (run_dir / name).exists()]


def continues_own_run(run_dir: Path, resume: str | None) -> bool:
    """`trainer.resume=auto`, or a resume from this run dir's own last.pt: the run continues into its dir."""
    if resume is None:
        return False
    return resume == "auto" or Path(resume).resolve() == (run_dir / "checkpoints" / "last.pt").resolve()


def refuse_to_overwrite(run_dir: Path, mode: str, resume: str | None) -> None:
    """A run dir that already holds a run's results is never written into (ConfigError otherwise).

    `trainer.resume=auto` declares the run dir as this training run's own: it continues from its last.pt, or starts
    it afresh when an earlier attempt was killed before its first checkpoint. Every other mode refuses such a dir.
    """
    if mode == "train" and continues_own_run(run_dir, resume):
        return
    existing = held_files(run_dir)
    if existing:
        hint = ("continue it with trainer.resume=auto or choose another hydra.run.dir" if mode == "train" else
                "choose another hydra.run.dir, or leave it unset for a new one")
        raise ConfigError(f"run dir {run_dir} already holds a run ({', '.join(existing)}); {hint}")


def refuse_sweep_dir(sweep_dir: Path, resume: str | None) -> None:
    """A sweep dir that holds an earlier sweep is refused, unless its jobs continue (`trainer.resume=auto`)."""
    if resume == "auto" or not sweep_dir.is_dir():
        return
    existing = [name for name in SWEEP_FILES if (sweep_dir / name).exists()]
    existing += sorted(f"{job.parent.name}/{job.name}" for job in sweep_dir.glob("*/job.json"))[:3]
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".hydra"):
        existing += [f"{job.name}/{name}" for name in held_files(job)][:1]
    if existing:
        raise ConfigError(f"sweep dir {sweep_dir} already holds a sweep ({', '.join(dict.fromkeys(existing))}); "
                          "choose another hydra.sweep.dir, or add trainer.resume=auto to continue its jobs")


def _mkdir(folder: Path, created: list[Path]) -> None:
    """`folder` and its missing parents; each one this call made is added to `created` (deepest last)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:
            pass


def claim_new(path: Path) -> tuple[Path, list[Path]]:
    """Create the first free one of `path`, `path-1`, `path-2`...; returns it and every dir created (deepest last)."""
    created: list[Path] = []
    n = 0
    while True:
        _mkdir(path.parent, created)
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            n += 1
            continue
        except FileNotFoundError:  # a failed run removed the empty parent meanwhile: make it again
            continue
        return candidate, [*created, candidate]


def claim_existing(path: Path) -> list[Path]:
    """Create `path` if needed; returns the dirs created (deepest last), empty when it existed."""
    created: list[Path] = []
    _mkdir(path, created)
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    return created


def holder(run_dir: Path) -> str | None:
    """Who holds `run_dir`'s lock (its pid and start time), or None when no live process does."""
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return describe_holder(path)
    finally:
        os.close(fd)
    return None


def describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@dataclass
class RunLock:
    """An exclusive flock on `<dir>/.lock`; the OS releases it when the process ends, however it ends."""

    path: Path
    kind: str = "run"  # or "sweep"
    fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirInUse(in_use_line(self.path.parent, describe_holder(self.path), self.kind)) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(record) + "\n").encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def in_use_line(run_dir: Path, who: str, kind: str = "run") -> str:
    """The error line for a dir whose lock another live process holds."""
    return (f"{kind} dir {run_dir} is in use by another {kind} ({who}); wait for it to end, or choose another "
            f"hydra.{kind}.dir")


@dataclass(frozen=True)
class Bookkeeping:
    """A used run dir's bookkeeping (Hydra's files, config_tree.txt, the lock, train.log's length) as it was
    before this invocation. A call that fails before it changes any result file puts it back, so a refused
    resume (another batch size, say) leaves the dir byte-identical."""

    files: dict[Path, bytes]
    log_size: int | None
    results: dict[Path, int]  # the result files and their modification times (ns)

    @staticmethod
    def results_of(run_dir: Path) -> dict[Path, int]:
        paths = (run_dir / name for name in (*RUN_FILES, *MODE_FILES))
        return {path: path.stat().st_mtime_ns for path in paths if path.is_file()}

    @classmethod
    def of(cls, run_dir: Path) -> Bookkeeping | None:
        """The record of a dir that holds results; None for a new or empty one."""
        results = cls.results_of(run_dir)
        if not results:
            return None
        kept = [*(run_dir / ".hydra").glob("*.yaml"), run_dir / "config_tree.txt", run_dir / LOCK_NAME]
        log = run_dir / "train.log"
        return cls({path: path.read_bytes() for path in kept if path.is_file()},
                   log.stat().st_size if log.is_file() else None, results)

    def restore(self, run_dir: Path) -> None:
        if self.results_of(run_dir) != self.results:
            return  # the run wrote results: its new record describes them
        for path, data in self.files.items():
            path.write_bytes(data)
        log = run_dir / "train.log"
        if self.log_size is None:
            log.unlink(missing_ok=True)
        elif log.is_file():
            os.truncate(log, self.log_size)


@dataclass
class Claim:
    """A dir this invocation runs in: its lock, the dirs it created for it (deepest last), and what its
    bookkeeping held before (a dir with results)."""

    run_dir: Path
    created: list[Path] = field(default_factory=list)
    lock: RunLock | None = None
    before: Bookkeeping | None = None


CLAIMS: list[Claim] = []  # this process's claims, released by `release_claims` when the CLI call ends


def claim(run_dir: Path, fresh: bool, kind: str = "run") -> Path:
    """Create (`fresh`: a new, unique one) and lock `run_dir`; returns the dir claimed. OutputError if unwritable."""
    try:
        if fresh:
            run_dir, created = claim_new(run_dir)
        else:
            created = claim_existing(run_dir)
        entry = Claim(run_dir, created, RunLock(run_dir / LOCK_NAME, kind), None if fresh else Bookkeeping.of(run_dir))
        entry.lock.acquire()  # RunDirInUse when another run holds it: then the dir is that run's, never cleaned
        CLAIMS.append(entry)
    except OSError as err:
        raise OutputError(f"cannot write the {kind} dir {run_dir}: {err.strerror or err}; "
                          f"choose another with hydra.{kind}.dir=... (or paths.output_root=...)") from None
    return run_dir


def is_stub(run_dir: Path) -> bool:
    """`run_dir` holds nothing but bookkeeping: Hydra's files, the log, the lock, the config tree."""
    try:
        return all(entry.name in BOOKKEEPING for entry in run_dir.iterdir())
    except OSError:
        return False


def release_claims(failed: bool) -> None:
    """Unlock every claimed dir; after a failure, remove those this invocation created that are only stubs, and
    put back the bookkeeping of used dirs whose results it did not change."""
    while CLAIMS:
        entry = CLAIMS.pop()
        if failed and entry.before is not None:
            entry.before.restore(entry.run_dir)
        created_here = bool(entry.created) and entry.created[-1] == entry.run_dir
        if failed and created_here and is_stub(entry.run_dir):
            for item in entry.run_dir.iterdir():
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
            for folder in reversed(entry.created):
                try:
                    folder.rmdir()
                except OSError:  # not empty: another run uses it
                    break
        if entry.lock is not None:
            entry.lock.release()
