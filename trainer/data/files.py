"""Checks and readers for data files on disk: a missing file is one clear DataError, never a traceback."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainer.errors import DataError

# Real CIFAR batches are pickles of dicts of numpy arrays; nothing else may be unpickled from a data file.
_PICKLE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def missing_files(folder: Path, names: Sequence[str]) -> list[str]:
    return [name for name in names if not (folder / name).is_file()]


def require_files(option: str, root: Path, subfolder: str, names: Sequence[str],
                  download: Callable[[], None] | None) -> Path:
    """Return `root/subfolder` once it holds `names`: downloaded when `download` is given, else a DataError."""
    folder = root / subfolder
    missing = missing_files(folder, names)
    if not missing:
        return folder
    if download is not None:
        try:
            download()
        except Exception as err:  # no network, a bad checksum, a full disk: one line either way
            reason = " ".join(str(err).split()) or type(err).__name__
            reason = reason if len(reason) <= 300 else reason[:297] + "..."
            raise DataError(f"data={option}: downloading into {folder} failed: {reason}") from None
        missing = missing_files(folder, names)
        if not missing:
            return folder
    absent = "none of them is there" if len(missing) == len(names) else f"missing {', '.join(missing)}"
    raise DataError(f"data={option}: expected {', '.join(names)} in {folder.resolve()} ({absent}); "
                    f"set data.root to the folder that holds {subfolder}/, or data.download=true on a "
                    "machine with network access")


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and numpy arrays only, so a crafted data file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy.core.", "numpy._core.")  # pickles made before NumPy 2
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def load_array_pickle(path: Path, option: str) -> dict:
    """One pickled dict of arrays (CIFAR's format; Python 2 strings read as latin-1, as torchvision does)."""
    try:
        with path.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"data={option}: cannot read {path}: {err}") from None
    if not isinstance(content, dict):
        raise DataError(f"data={option}: {path} holds a {type(content).__name__}, not a dict")
    return content
