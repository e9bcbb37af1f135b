"""User-facing errors.

A `PandermError` is a problem with the user's input (a file, a column, a flag, a
checkpoint). Doors print its message as one line and exit non-zero; anything else
is a bug and keeps its traceback.
"""


class PandermError(Exception):
    """Bad input: the message names the file, row, column or flag at fault."""

    exit_code = 2


class DataError(PandermError):
    """A CSV, image or array that cannot be used as given."""


class ModelError(PandermError):
    """A model id, weights file or checkpoint that cannot be loaded as given."""
