"""Atomic writers for every file a run produces.

Each writer writes to a temporary file in the destination folder and renames it
over the target, so a crash or Ctrl-C never leaves a half-written file where a
good one was.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from . import __version__
from .errors import PandermError


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a result file is as readable as any other
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return None if math.isnan(value) else value
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON (NaN becomes null) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return Path(path)


RANDOM_WEIGHTS = "RANDOM WEIGHTS: these numbers come from an untrained model"
#: the trainers' warning (finetuning, segmentation) when the backbone was untrained
RANDOM_BACKBONE = "RANDOM WEIGHTS: the backbone started from an untrained model"


@runtime_checkable
class TaskRun(Protocol):
    """What a task's `run`/`evaluate` returns: the numbers (`to_json`), the table printed (`rows`) and the files
    beside results.json (`write_files`, which returns results.json's body, analyses included)."""

    def to_json(self) -> dict: ...

    def rows(self) -> list[dict]: ...

    def write_files(self, out_dir: Path, analysis=None) -> dict: ...


def write_report(run: TaskRun, out_dir: str | os.PathLike, provenance: dict, random_init: bool = False,
                 analysis=None, warning: str = RANDOM_WEIGHTS, filename: str = "results.json") -> dict:
    """A task run's files, then `filename` (results.json): its body, the random-weights warning when the model was
    untrained, and the provenance last. Returns what the file holds.

    A body that already has a `provenance` (or `warning`) key keeps that key where it is: the multimodal door's
    results.json predates this shape and its bytes are pinned (benchmarks/door_hashes.json)."""
    out_dir = Path(out_dir)
    summary = run.write_files(out_dir, analysis)
    if random_init:
        summary["warning"] = warning
    summary["provenance"] = provenance
    write_json(out_dir / filename, summary)
    return summary


def append_jsonl(path: str | os.PathLike, record: dict) -> Path:
    """Append one JSON line; the file is rewritten atomically with the new line."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    with atomic_path(path) as tmp:
        tmp.write_text(old + json.dumps(_jsonable(record)) + "\n", encoding="utf-8")
    return path


def write_csv(path: str | os.PathLike, frame, **kwargs) -> Path:
    """Write a pandas DataFrame to CSV atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(path)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save an array as .npy atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return Path(path)


def subplots(*grid, figsize=None, **kw):
    """``(fig, axes)`` like ``pyplot.subplots``, on a bare ``Figure``: no pyplot state, and a notebook user's
    backend is never switched (saving needs no GUI backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def save_figure(path: str | os.PathLike, fig) -> Path:
    """Save a matplotlib figure atomically (and close it if pyplot manages it)."""
    suffix = Path(path).suffix or ".png"
    with atomic_path(path, suffix=suffix) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format=suffix.lstrip("."))
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    return Path(path)


def format_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    """A plain-text table for the terminal (no external dependency)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "nan" if math.isnan(float(v)) else format(float(v), floatfmt)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


# Folders created by the current door run (`claim_dir`): removed again when the run fails on bad input, so a
# failed run leaves no half-filled output folder behind. An interrupted run (Ctrl-C, SIGTERM) keeps them:
# they hold what a resumed run continues from.
_CLAIMED: list[Path] = []


def claim_dir(path: str | os.PathLike) -> Path:
    """`mkdir -p path`, remembering the top-most folder this call created (see `discard_claimed`)."""
    path = Path(path)
    top = None
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    path.mkdir(parents=True, exist_ok=True)
    if top is not None:
        _CLAIMED.append(top)
    return path


def forget_claimed() -> None:
    """Keep the folders created so far (the run finished, or was interrupted and may resume)."""
    _CLAIMED.clear()


def discard_claimed() -> list[Path]:
    """Remove the folders `claim_dir` created during this run (everything in them was written by it)."""
    import shutil

    removed = []
    for top in reversed(_CLAIMED):
        if top.is_dir():
            shutil.rmtree(top, ignore_errors=True)
            removed.append(top)
    _CLAIMED.clear()
    return removed


# Run folders this process holds (an open descriptor with an exclusive flock each), released at exit.
_LOCKED: dict[str, int] = {}


def lock_run_dir(path: str | os.PathLike) -> Path:
    """Hold an exclusive lock on the run folder `path` (created if absent) for the rest of this process.

    A second run on the same folder, started while this one works (resuming, overwriting or neither),
    gets one error line instead of writing into it. The lock is on the folder itself (flock on its
    descriptor), so it leaves no file behind and dies with the process, even under kill -9.
    """
    path = Path(path)
    key = str(path.resolve())
    if key in _LOCKED:
        return path
    claim_dir(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        # The folder belongs to the run holding the lock: never remove it when this run fails.
        _CLAIMED[:] = [top for top in _CLAIMED if not (top == path or top in path.parents)]
        raise PandermError(f"output folder {path} is in use by another run that is still working; wait for it "
                           "or choose another output folder") from None
    except (ImportError, OSError):  # no flock on this platform or file system: run unlocked
        os.close(fd)
        return path
    _LOCKED[key] = fd
    return path


def release_run_dirs() -> None:
    """Let go of every run folder this process locked (the door's run is over)."""
    while _LOCKED:
        _, fd = _LOCKED.popitem()
        os.close(fd)


def prepare_run_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create and lock a run folder; an existing non-empty one is an error unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PandermError(f"output path exists and is not a folder: {path}")
    lock_run_dir(path)
    if any(path.iterdir()) and not overwrite:
        raise PandermError(f"output folder {path} already holds a run", param="run_dir")
    return claim_dir(path)


def confusion_matrix_figure(y_true, y_pred, classnames, title: str = ""):
    """Counts and row-normalised rates in one heat map (classes beyond 30 are unlabeled)."""

    k = len(classnames)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * k, 24)
    fig, ax = subplots(figsize=(size, size * 0.85))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if k <= 30:
        ax.set_xticks(range(k), labels=classnames, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), labels=classnames, fontsize=8)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


# Side files a run read (class-name and template files): provenance hashes them with the declared inputs.
_READ_INPUTS: list[Path] = []


def record_input(path: str | os.PathLike) -> None:
    """Note a file the current run read, so that its provenance carries the file's sha256."""
    if Path(path) not in _READ_INPUTS:
        _READ_INPUTS.append(Path(path))


def forget_inputs() -> None:
    """A new run starts: forget the side files earlier runs in this process read."""
    _READ_INPUTS.clear()


def provenance(encoder=None, csv_files=(), seed=None, extra: dict | None = None, device=None, inputs=(),
               model: dict | None = None) -> dict:
    """What a reader needs to rerun a result: command line, versions, model, data hashes, seed, device.

    `inputs` are other files the result depends on (embeddings, SAE checkpoints): their sha256 goes under
    `input_sha256`, with every side file recorded by `record_input` (class names, templates). Without an encoder, `model` describes what stands in for it (e.g. an SAE) and `device`
    says where the work ran.
    """
    import platform
    import sys
    from importlib import metadata

    versions = {"panderm": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "open_clip_torch", "timm", "transformers", "numpy", "scikit-learn", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    import shlex

    out = {"command": shlex.join(sys.argv), "versions": versions, "seed": seed}
    if encoder is not None:
        out["model"] = encoder.describe()
        out["device"] = str(encoder.device)
    elif model is not None:
        out["model"] = model
    if device is not None:
        out["device"] = str(device)
    out["csv_sha256"] = {str(csv): file_sha256(csv) for csv in csv_files}
    hashed = {}
    for f in [*inputs, *_READ_INPUTS]:
        f = Path(f)
        if f.is_file():
            hashed[str(f)] = file_sha256(f)
        elif f.is_dir():  # a checkpoint folder: every file in it
            for g in sorted(f.rglob("*")):
                if g.is_file():
                    hashed[str(g)] = file_sha256(g)
    if hashed:
        out["input_sha256"] = hashed
    out.update(extra or {})
    return out
