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
