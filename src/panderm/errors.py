"""User-facing errors.

A `PandermError` is a problem with the user's input (a file, a column, a flag, a
checkpoint). Doors print its message as one line and exit non-zero; anything else
is a bug and keeps its traceback.
"""


class PandermError(Exception):
    """Bad input: the message names the file, row, column or flag at fault.

    `param` names the setting that would fix it (e.g. "image_root") without a flag spelling: the door that
    prints the error knows its own flag for it (`render`).
    """

    exit_code = 2

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param

    def render(self, flags: dict[str, str] | None = None) -> str:
        """The message, ending with the door's own hint for `param` where the door has one.

        A door's map gives a flag (``"--root"``: "(set it with --root)") or a whole hint in its own words
        (``"drop --reference-preprocess"``: "(drop --reference-preprocess)").
        """
        text = str(self)
        if self.param is None:
            return text
        hint = (flags or {}).get(self.param)
        if not hint:
            return f"{text} (give it as the {self.param.replace('_', ' ')})"
        return f"{text} (set it with {hint})" if hint.startswith("-") else f"{text} ({hint})"


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
