"""Progress of the long loops (encoding, probe fits, training steps, SAE epochs).

On a terminal: a tqdm bar that disappears when done. When stderr is a file or a pipe (a batch job's log):
one line per finished tenth and one at the end, so a log shows progress without a carriage-return smear.
`-q` (:func:`set_quiet`) silences both; results and errors still print.
"""
from __future__ import annotations

import logging
import sys
import weakref
from typing import Iterable, Iterator, TypeVar

__all__ = ["Progress", "abandon_all", "is_quiet", "progress", "set_quiet", "track"]

T = TypeVar("T")
log = logging.getLogger("panderm.progress")
_quiet = False
_open: "weakref.WeakSet[Progress]" = weakref.WeakSet()


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


class Progress:
    """`update(n)` / `close()`; a bar on a terminal, lines elsewhere, nothing when quiet or disabled."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True):
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self._bar = None
        self._lines = False
        self._next = 0
        if not enabled or _quiet:
            return
        _open.add(self)
        if _is_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        else:
            self._lines = True
            self._step = max(1, (total or 10) // 10)
            self._next = self._step

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and self.done >= self._next and (self.total is None or self.done < self.total):
            self._line()
            self._next = (self.done // self._step + 1) * self._step

    def close(self) -> None:
        _open.discard(self)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines:
            self._line()
            self._lines = False

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        log.info("%s: %d%s %s", self.desc, self.done, of, self.unit)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abandon_all() -> None:
    """Close every open bar without a final line: an error or Ctrl-C unwinds the loops, and their bars (closed
    later, when the interrupted frames are freed) must not print after the run's last message."""
    for bar in list(_open):
        bar._lines = False
        bar.close()


def progress(total: int | None, desc: str, unit: str = "it", enabled: bool = True) -> Progress:
    return Progress(total, desc, unit, enabled)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Yield `items`, counting each one finished when the next is asked for (or the loop ends)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update(1)


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr (notebooks, captured output)
        return False
