"""The one exception family for bad input a user can fix.

The CLI prints these as a one-line message (no traceback) and exits with the error's ``exit_code``: 2 for bad
input, 1 for a failure mid-run (e.g. a full disk); anything else is a bug and keeps its traceback.
"""


class MlkasrError(Exception):
    """Bad input: the message names the file, key or option and what was expected."""

    exit_code = 2


class OutputWriteError(MlkasrError):
    """An output that could not be written mid-run (disk full, I/O error): the message names the file and the
    cause; nothing half-written is left under its name."""

    exit_code = 1


def one_line(message: str) -> str:
    """``message`` with newlines and other control characters escaped (``\\n``), so that a file name holding them
    cannot break or forge the lines of a command's output."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name: torch's and the runtimes' messages
    run over many lines (with advice that does not apply here), the first one says what went wrong."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
