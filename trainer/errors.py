"""Errors the CLI reports as one line on stderr, and the process exit codes it uses."""

EXIT_OK = 0
EXIT_COMPOSE_ERROR = 1  # Hydra could not compose the config (unknown option, wrong type, unknown key)
EXIT_USER_ERROR = 2  # a value out of range, a missing file, a bad checkpoint: see the message


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its type's name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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


class OutputError(TrainerError):
    """A run file that could not be written (disk full, no permission); its previous version is intact."""
