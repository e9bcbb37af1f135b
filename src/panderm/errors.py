"""User-facing errors.

A `PandermError` is a problem with the user's input (a file, a column, a flag, a
checkpoint). Doors print its message as one line and exit non-zero; anything else
is a bug and keeps its traceback.
"""


class PandermError(Exception):
    """Bad input: the message names the file, row, column or flag at fault.

    `param` names the setting that would fix it (e.g. "image_root") without a flag spelling: the door that
    prints the error knows its own flag for it (`render`); `drop=True` when the fix is to leave it out. A tuple
    names several settings that go together (a checkpoint's model configuration).
    """

    exit_code = 2

    def __init__(self, message: str = "", *, param: str | tuple[str, ...] | None = None, drop: bool = False):
        super().__init__(message)
        self.param = param
        self.drop = drop  # the fix is to leave the setting out, not to give it

    def render(self, flags: dict[str, str] | None = None) -> str:
        """The message, ending with the door's own hint for `param` where the door has one.

        A door's map gives a flag (a hint starting with a dash: "(set it with FLAG)") or a whole hint in its
        own words ("(HINT)"); a door without the setting adds nothing (the message names it in words).
        """
        text = str(self)
        if self.param is None:
            return text
        if not isinstance(self.param, str):  # several settings together: name those the door has
            names = [hint for p in self.param if (hint := (flags or {}).get(p))]
            return f"{text} (check {', '.join(names)})" if names else text
        hint = (flags or {}).get(self.param)
        if not hint:  # the door has no such setting: the message names it in words
            return text
        if hint.startswith("-"):
            return f"{text} ({'drop' if self.drop else 'set it with'} {hint})"
        return f"{text} ({hint})"


class DataError(PandermError):
    """A CSV, image or array that cannot be used as given."""


class ModelError(PandermError):
    """A model id, weights file or checkpoint that cannot be loaded as given."""


def require_finite(settings, param_of: dict[str, str] | None = None) -> None:
    """Every float field of the dataclass `settings` is a finite number (a NaN learning rate is one line, not a NaN
    run). The error's `param` is the field's name, or `param_of[name]` where the doors know it by another."""
    import dataclasses
    import math

    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            name = (param_of or {}).get(f.name, f.name)
            raise PandermError(f"{name.replace('_', ' ')} must be a finite number, got {value}", param=name)
