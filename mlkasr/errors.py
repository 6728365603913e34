"""The one exception family for bad input a user can fix.

The CLI prints these as a one-line message (no traceback) and exits with status 2; anything else is a bug and
keeps its traceback.
"""


class MlkasrError(Exception):
    """Bad input: the message names the file, key or option and what was expected."""
