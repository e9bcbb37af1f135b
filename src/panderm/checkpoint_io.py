"""Reading and writing torch files that may come from someone else.

Every torch file the toolkit reads goes through :func:`load_torch`, which uses
``torch.load(weights_only=True)``: a crafted pickle cannot run code, it is refused
with one line. Training checkpoints therefore hold only tensors and plain Python
containers (random-number state included, see :func:`rng_state`), and
:func:`save_torch` writes them byte-for-byte reproducibly: the payload is
serialised in memory (torch names the zip members after the file it writes to, so
a temporary file name would leak into the bytes) and then renamed into place.
"""
from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .errors import ModelError
from .report import atomic_path, forget_claimed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_torch(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; one ModelError line for anything unreadable.

    A file that needs arbitrary unpickling (code objects, custom classes, numpy arrays) is refused,
    never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, foreign, or a pickle that would run code
        msg = _first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "Unsupported operand" in str(exc):
            msg = ("it holds Python objects that only an unsafe unpickler can build; it was refused, not run "
                   f"({msg[:160]})")
        raise ModelError(f"{path}: not a readable {what}: {msg}") from None


def save_torch(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` atomically; identical payloads give identical bytes whatever the file name."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path, suffix=".pt") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
    return Path(path)


def save_training_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """:func:`save_torch`, and the run folder holding it is kept even if the run later fails (resume needs it)."""
    save_torch(path, payload)
    forget_claimed()
    return Path(path)


def load_training_checkpoint(path: str | os.PathLike, required: Iterable[str], what: str) -> dict:
    """A checkpoint dict with every `required` key, or one line naming the file and what is missing."""
    ck = load_torch(path, what)
    if not isinstance(ck, dict):
        raise ModelError(f"{path}: not a {what}: it holds a {type(ck).__name__}, not a dict of named entries")
    missing = [k for k in required if k not in ck]
    if missing:
        raise ModelError(f"{path}: not a {what}: missing {', '.join(repr(k) for k in missing)} "
                         f"(it has {', '.join(repr(k) for k in list(ck)[:8]) or 'no entries'})")
    return ck


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Delete temporary files a killed run left for `names` (``.NAME.*.tmp``, as report.atomic_path makes)."""
    folder = Path(folder)
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------- #
# Random-number state as tensors and plain containers (weights_only-loadable)
# --------------------------------------------------------------------------- #
def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
