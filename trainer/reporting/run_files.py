"""The plain files runs leave (metrics.csv, summary.json, per_class.csv, predictions.csv, ...), written so that a
kill or a full disk at any instant leaves either the old file or the complete new one.

No torch here: the Hydra callbacks write the sweep summary through the same helpers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from trainer.errors import OutputError


def write_failure(err: BaseException) -> str:
    """Why a write failed: the OSError behind it (torch.save turns a failed write of its zip stream into
    "[enforce fail at inline_container.cc] unexpected pos", with the OSError as its context), or its first line."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.strerror or os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# The hidden names `atomic_write` and `atomic_link` give a file before renaming it into place (what a kill
# in between leaves behind; a resume removes them from the checkpoints folder).
TEMPORARY_NAMES = (".*.tmp", ".*.link")


def failed_write(path: Path, err: BaseException, existed: bool) -> OutputError:
    """The one-line error of a write or link that did not replace `path`, saying whether its old version is kept."""
    kept = "; its previous version is intact" if existed else f"; {path.name} was not written"
    return OutputError(f"could not write {path}: {write_failure(err)}{kept}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    A kill at any instant leaves either the old file or the complete new one, never a truncated one. A failed
    write (a full disk: "No space left on device") is an OutputError that says whether a previous version is kept.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"could not write {path}: {write_failure(err)}") from None
    existed = path.is_file()
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run files private to their writer
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch.save reports a failed write as a RuntimeError
            raise failed_write(path, err, existed) from None
        raise
    sync_folder(path.parent)


def atomic_link(source: Path, path: Path) -> bool:
    """Make `path` a hard link to the complete file `source`, replacing `path` atomically (a kill leaves its old
    version or the link); False, with nothing changed, where the file system has no hard links."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
    try:
        os.link(source, tmp)
    except OSError:
        return False
    existed = path.is_file()
    try:
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise failed_write(path, err, existed) from None
        raise
    sync_folder(path.parent)
    return True


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the names just put in it survive a crash."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_csv(path: Path, rows: Sequence[dict], fields: Sequence[str] | None = None) -> Path:
    """Rewrite the whole file from `rows` (columns: `fields`, or the first row's keys; extra keys are left out)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(fields if fields is not None else rows[0]), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))
    return path


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """metrics.csv, one row per epoch, rewritten whole, so a resumed run never duplicates or loses a row."""
    if history:
        write_csv(path, history)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()))
