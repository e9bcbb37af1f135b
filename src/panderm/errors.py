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


def require_finite(settings, flag=lambda name: "--" + name.replace("_", "-")) -> None:
    """Every float field of the dataclass `settings` is a finite number (``--lr nan`` is one line, not a NaN run)."""
    import dataclasses
    import math

    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise PandermError(f"{flag(f.name)} must be a finite number, got {value}")
