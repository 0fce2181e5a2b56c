"""Errors the CLI reports as one line on stderr, and every process exit code the trainer and its scripts use.

README.md's "Exit codes" table lists the CLI's; tests/unit/test_cli.py checks the two agree.
"""

import dataclasses
import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_COMPOSE_ERROR = 1  # Hydra could not compose the config (unknown option, wrong type, unknown key)
EXIT_USER_ERROR = 2  # a value out of range, a missing file, a bad checkpoint: see the message
EXIT_PREEMPTED = 3  # stopped by SIGTERM/SIGINT after saving last.pt: run the printed command to resume
EXIT_SWEEP_JOB_FAILED = 1  # a sweep ran every job but at least one failed (see sweep_summary.csv)
EXIT_CHECK_FAILED = 1  # a check script (scripts/chaos_resume.py) found a result that differs from its reference


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    """"; did you mean PREFIX.close?" for the known names closest to a mistyped one, or "" when none is close."""
    close = difflib.get_close_matches(name, [str(k) for k in known], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


def unknown_key_hint(err: BaseException | None) -> str:
    """The did-you-mean for OmegaConf's "Key 'x' not in 'SomeConfig'", from that schema's field names."""
    schema, key = getattr(err, "object_type", None), getattr(err, "key", None)
    if not (isinstance(key, str) and isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return ""
    names = [f.name for f in dataclasses.fields(schema)]
    if key in names:  # a known key with a bad value: nothing to suggest
        return ""
    full_key = str(getattr(err, "full_key", None) or key)
    parent = full_key[: -len(key)] if full_key.endswith(key) else ""
    return did_you_mean(key, names, parent)


def composition_error_line(err: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line composition errors as one line: the sentences, then the options.

    Indented detail lines (full_key, object_type) and the config search path are dropped; an "Available
    options" list becomes "(options: a, b, c)". Hydra's "To append to your config use +key=value" is dropped:
    no schema accepts a key it does not declare; the schema's closest field names are suggested instead.
    """
    text = str(err)
    if err.__cause__ is not None and str(err.__cause__) not in text:
        text += "\n" + str(err.__cause__)
    sentences: list[str] = []
    options: list[str] = []
    section = "message"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Available options in"):
            section = "options"
        elif line.startswith(("Config search path", "Set the environment variable HYDRA_FULL_ERROR")):
            section = "skip"
        elif line.startswith("To append to your config use +"):
            continue
        elif section == "options" and raw.startswith("\t"):
            options.append(line)
        elif line and section != "skip" and not raw.startswith((" ", "\t")) and not line.startswith("See https://"):
            section = "message"
            sentences.append(line.rstrip(".:"))
    message = ("; ".join(sentences) or type(err).__name__) + unknown_key_hint(err.__cause__ or err)
    override = getattr(err, "override", None)  # OverrideParseException: the override that does not parse
    if override is not None:
        message = f"cannot parse override {override!r}: {message}"
    return f"{message} (options: {', '.join(options)})" if options else message


def described(err: BaseException) -> str:
    """`Type: first line` for an error that is not the trainer's own (a bug, a library's failure)."""
    return f"{type(err).__name__}: {first_line(err)}"


class TrainerError(Exception):
    """A problem with the user's input that has a one-line explanation; no traceback is shown."""

    exit_code = EXIT_USER_ERROR


class ConfigError(TrainerError):
    """A composed config that is well-typed but has a value outside its allowed range."""


class CheckpointError(TrainerError):
    """A checkpoint that is missing, truncated, unsafe to load or made for another model."""


class DataError(TrainerError):
    """A data set whose files are missing or malformed."""


class Preempted(TrainerError):
    """The run stopped on SIGTERM/SIGINT after saving its state; the message says how to resume it."""

    exit_code = EXIT_PREEMPTED


class UnknownKeyError(ConfigError):
    """A key that no schema declares (added with `+key=value`): refused like Hydra's own unknown keys."""

    exit_code = EXIT_COMPOSE_ERROR


class OutputError(TrainerError):
    """A run file that could not be written (disk full, no permission); a previous version of it is kept."""
