"""Prompt templates for zero-shot classification.

The reference toolkit (PanDerm-2 / DermFM-Zero) uses exactly one template list,
``OPENAI_SKIN_TEMPLATES``, for every benchmark: each class name is rendered into
all 8 prompts, the text embeddings are L2-normalised, averaged and re-normalised.
`SKIN_TEMPLATES` reproduces that list verbatim, in order, as ``str.format``
strings with a ``{c}`` placeholder.

Users may supply their own list with `load_templates` (one template per line).
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from panderm.errors import DataError
from panderm.report import record_input

__all__ = ["SKIN_TEMPLATES", "render", "load_templates"]

# Verbatim from the reference (docs/REFERENCE.md, Zero-shot classification), kept as package data
# (zeroshot_templates.json). Templates 1 and 2 differ only by the final period; both are kept because the
# reference averages over all 8 and dropping one would change the classifier. Templates 7 and 8 mention "skin
# cancer" and are used for non-cancer sets too (SNU, SD-128, Daffodil) in the reference; kept as-is.
SKIN_TEMPLATES: tuple[str, ...] = tuple(
    json.loads(resources.files("panderm.data").joinpath("zeroshot_templates.json").read_text(encoding="utf-8"))["skin"]
)


def render(templates: Iterable[str] | str, classname: str) -> list[str]:
    """Fill every template with ``classname``; returns one prompt per template.

    Templates may use ``{c}`` or ``{}`` as the placeholder. A single template
    string is accepted too (iterating a bare ``str`` would yield characters).
    """
    if isinstance(templates, str):
        templates = (templates,)
    # Passing the name both positionally and as `c` lets one call serve both
    # placeholder styles.
    return [t.format(classname, c=classname) for t in templates]


def _check_template(template: str) -> str | None:
    """Return why ``template`` is unusable, or None if it is fine."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:  # unbalanced braces
        return f"malformed braces ({exc}); write a literal brace as '{{{{' or '}}}}'"
    if not fields:
        return "no '{c}' or '{}' placeholder for the class name"
    bad = sorted({f for f in fields if f not in ("", "c")})
    if bad:
        shown = ", ".join("{" + b + "}" for b in bad)
        return f"unknown placeholder(s) {shown}; use '{{c}}' or '{{}}'"
    return None


def load_templates(path: str | Path) -> tuple[str, ...]:
    """Read templates from a text file, one per line.

    Blank lines and lines starting with ``#`` are ignored; surrounding
    whitespace is stripped. Every remaining line must contain a ``{c}`` or
    ``{}`` placeholder. Raises `DataError` naming the file (and line) for a
    missing file, a line without a usable placeholder, or a file with no
    templates at all.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: template file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read template file ({exc})") from None
    record_input(path)

    templates: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        problem = _check_template(line)
        if problem is not None:
            raise DataError(f"{path}, line {lineno}: {problem}: {line!r}")
        templates.append(line)
    if not templates:
        raise DataError(f"{path}: no templates found (only blank lines or # comments)")
    return tuple(templates)
