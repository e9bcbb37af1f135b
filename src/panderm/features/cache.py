"""The content-keyed on-disk feature cache: keys, checksummed entries, the key's lock, the resumable writer.

The cache key covers everything that can change the numbers: the encoder
fingerprint (weights, the model configuration as read from its files and as
built, preprocessing), the versions of the code that computes them (panderm,
torch, torchvision, open_clip, transformers, timm, Pillow), the output kind, the
effective precision, the decode size and every image's path, size and
modification time. A repeat run on the same images reads the `.npy` back instead
of re-encoding; touching an image or changing the model, its configuration or
its preprocessing gives a new key.

Every entry `<key>.npy` has a sidecar `<key>.json` holding the sha256 of the
array's bytes and its shape; a read verifies both and an entry that fails
(zeroed, truncated, overwritten) is recomputed with one warning naming it. The
sidecar is written before the entry, each atomically (temp file next to it +
rename), and only by the holder of the key's lock (`<key>.lock`), so
concurrent runs never see half a file and never pair an entry with another
run's checksum. Temp files left by a killed run are removed by the next run
that takes the key's lock; a write that fails (a full disk) removes everything
it started. The lock is an flock on `<key>.lock` taken through `filelock`; a run that finds
it held does not wait for it.

Results stream into a memory-mapped `.npy` next to the entry, batch by batch
(`<key>.partial.npy`, resumable after an interruption): peak memory does not
grow with the number of images. A run without the cache (and a run that finds another
process extracting the same key) encodes into memory and writes no file.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import gc
import glob
import hashlib
import json
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock, Timeout

from .. import __version__
from ..errors import DataError, PandermError
from ..models.base import Encoder
from ..models.demo import cache_root
from ..report import atomic_path
from .engine import _encode_all, _loader, _run_into, effective_precision, log, resolve_batch_size

# 2: checksummed entries; keys cover the model configuration and the code versions.
CACHE_VERSION = 2
# Libraries whose version can change the numbers (decoding, transforms, model code).
CODE_PACKAGES = ("torch", "torchvision", "open_clip_torch", "transformers", "timm", "pillow")


def cache_dir_default() -> Path:
    return cache_root() / "features"


@functools.lru_cache(maxsize=1)
def code_versions() -> dict[str, str | None]:
    """panderm's version and those of the libraries that compute or decode (part of every cache key)."""
    out: dict[str, str | None] = {"panderm": __version__}
    for name in CODE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cache_key(encoder: Encoder, kind: str, paths: Sequence[os.PathLike], precision: str = "amp",
              draft: int | None = None) -> str:
    """Everything that changes the numbers: weights + model configuration + preprocessing (the fingerprint),
    code versions, kind, precision, decode size, every file (path, size, mtime) in order."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "fp": encoder.fingerprint, "kind": kind,
                         "pre": encoder.preprocess_spec.describe(), "code": code_versions(),
                         "prec": effective_precision(encoder.device, precision), "draft": draft,
                         "n": len(paths)},
                        sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.fspath(p)}\0missing\n".encode())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- checksummed cache entries
def array_digest(array: np.ndarray) -> str:
    """sha256 of the array's bytes in C order (read through a memory map without a copy)."""
    a = np.ascontiguousarray(array)
    view = memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")
    h = hashlib.sha256()
    step = 64 << 20
    for start in range(0, len(view), step):
        h.update(view[start:start + step])
    return h.hexdigest()


def sidecar_path(entry: Path) -> Path:
    return Path(entry).with_suffix(".json")


def read_entry(entry: Path, rows: int | None = None, what: str = "feature", warn: bool = True) -> np.ndarray | None:
    """The float32 [rows, D] array cached at `entry` (a read-only memory map) when it is complete and its bytes
    match the checksum in its sidecar; None when there is no entry, or (with one warning naming it) when the
    entry is truncated, corrupt, of the wrong shape, or has no checksum. The caller recomputes it."""
    entry = Path(entry)
    if not entry.is_file():
        return None
    try:
        record = json.loads(sidecar_path(entry).read_text(encoding="utf-8"))
        expected, shape = record["sha256"], [int(v) for v in record["shape"]]
    except (OSError, ValueError, KeyError, TypeError):
        problem = "has no checksum record"
    else:
        try:
            array = np.load(entry, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            problem = f"is unreadable ({(str(exc).splitlines() or [type(exc).__name__])[0]})"
        else:
            if array.dtype != np.float32 or list(array.shape) != shape or (rows is not None and shape[0] != rows):
                problem = f"has shape {list(array.shape)} {array.dtype}, not {shape} float32"
            elif array_digest(array) != expected:
                problem = "does not match its checksum (corrupted)"
            else:
                return array
    if warn:
        log.warning("%s cache entry %s %s: recomputing it", what, entry, problem)
    return None


@contextlib.contextmanager
def entry_lock(entry: Path, blocking: bool = False):
    """The key's lock (`<stem>.lock`): yields True when held. Every write of an entry, its sidecar or its partial
    files happens under it, so a holder may also remove temp files an earlier (killed) holder left."""
    entry = Path(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or full cache folder: one line, not a traceback
        raise cache_write_error(entry, exc) from exc
    lock = FileLock(os.fspath(entry.with_name(entry.stem + ".lock")))
    try:
        lock.acquire(timeout=-1 if blocking else 0)  # 0: one attempt, as flock's LOCK_NB
        held = True
    except Timeout:  # another process holds the key (Timeout is an OSError, so it is caught first)
        held = False
    except OSError as exc:  # the lock file cannot be created or opened
        raise cache_write_error(entry, exc) from exc
    if not held:
        yield False
        return
    try:
        for stale in entry.parent.glob(f".{glob.escape(entry.stem)}.*.tmp"):
            stale.unlink(missing_ok=True)
        yield True
    finally:
        lock.release()


def _write_sidecar(entry: Path, array_shape, digest: str, meta: dict | None) -> None:
    record = {**(meta or {}), "shape": [int(v) for v in array_shape], "dtype": "float32", "sha256": digest,
              "code": code_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(sidecar_path(entry)) as tmp:
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")


def _remove_entry(entry: Path) -> None:
    for path in (entry, sidecar_path(entry)):
        Path(path).unlink(missing_ok=True)


def write_entry(entry: Path, array: np.ndarray, meta: dict | None = None) -> bool:
    """Publish `array` at `entry` (checksum sidecar first, then the array, each atomically) when the key's lock is
    free; False (nothing written) when another process holds it: that process is writing the same entry.
    A failed write (a full disk) leaves neither file and raises one line naming the folder and the errno."""
    entry = Path(entry)
    array = np.ascontiguousarray(array, dtype=np.float32)
    with entry_lock(entry) as held:
        if not held:
            return False
        if read_entry(entry, array.shape[0], warn=False) is not None:
            return True  # published meanwhile by another run
        try:
            _write_sidecar(entry, array.shape, array_digest(array), meta)
            with atomic_path(entry, suffix=".npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, array, allow_pickle=False)
        except OSError as exc:
            _remove_entry(entry)
            raise cache_write_error(entry, exc) from exc
        # A complete entry supersedes what an interrupted extraction of the same key left.
        for suffix in (".partial.npy", ".partial.json"):
            entry.with_name(entry.stem + suffix).unlink(missing_ok=True)
    return True


def cache_write_error(entry: Path, exc: OSError) -> PandermError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return PandermError(f"cannot write the cache entry {entry}: {reason} (errno {exc.errno}); "
                        "nothing partial was kept (free some space, or put the feature cache elsewhere, e.g. with "
                        "PANDERM_CACHE=DIR, or turn it off)",
                        param="cache_dir")


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) file now: a full disk is then an OSError here, not a SIGBUS mid-extraction."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the resumable writer
def _run_resumable(encoder, paths, kind, entry: Path, batch_size, num_workers, precision, draft, progress,
                   compiled: bool = False, meta: dict | None = None) -> np.ndarray:
    """Extract into `<key>.partial.npy`, recording progress after every batch, then publish it as `entry`.

    A run stopped by Ctrl-C, SIGTERM, kill -9 or a crash leaves the partial file and its progress record; the next
    run with the same cache key continues from the first unfinished row. The key's lock keeps two concurrent
    runs off the same partial file: the second one encodes into memory and publishes its result only if the
    lock is free by then. A write that fails (a full disk, errno 28) removes the partial files and raises one
    line: nothing partial stays in the cache.
    """
    n = len(paths)
    dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
    with entry_lock(entry) as held:
        if held:
            done = read_entry(entry, n, warn=False)  # published while this run was waiting for the lock?
            if done is not None:
                return done
            return _extract_locked(encoder, paths, kind, entry, n, dim, batch_size, num_workers, precision, draft,
                                   progress, compiled, meta)
    array = _run_into(encoder, paths, kind, np.empty((n, dim), np.float32), batch_size, num_workers, precision, draft,
                      progress, compiled)
    write_entry(entry, array, meta)
    return array


def _prefix_hasher(rows: np.ndarray):
    h = hashlib.sha256()
    if rows.size:
        h.update(memoryview(np.ascontiguousarray(rows).reshape(-1).view(np.uint8)))
    return h


def _extract_locked(encoder, paths, kind, entry: Path, n, dim, batch_size, num_workers, precision, draft, progress,
                    compiled, meta) -> np.ndarray:
    """The lock holder's extraction. The progress record carries the sha256 of the finished rows: a resumed
    partial file whose rows no longer match it (damaged while the run was stopped) starts over."""
    partial = entry.with_name(entry.stem + ".partial.npy")
    progress_file = entry.with_name(entry.stem + ".partial.json")
    done, prefix_digest = 0, None
    if partial.is_file() and progress_file.is_file():
        try:
            record = json.loads(progress_file.read_text())
            if record.get("n") == n and record.get("dim") == dim and 0 <= record.get("done", -1) <= n:
                done, prefix_digest = int(record["done"]), record.get("sha256")
        except (ValueError, OSError, TypeError):
            done = 0
    out = None
    hasher = None

    def discard():
        nonlocal out
        out = None  # close the memory map before removing its file
        gc.collect()
        for path in (partial, progress_file):
            path.unlink(missing_ok=True)
        _remove_entry(entry)  # only ever replaced with the lock held: what is there now is stale or invalid

    try:
        if done:
            try:
                out = np.lib.format.open_memmap(partial, mode="r+")
            except (ValueError, OSError, EOFError):  # truncated or not an .npy any more
                out = None
            if out is not None and out.shape == (n, dim) and out.dtype == np.float32:
                hasher = _prefix_hasher(out[:done])
                if hasher.hexdigest() != prefix_digest:
                    log.warning("interrupted extraction %s does not match its progress record: starting over",
                                partial)
                    out = None
            else:
                out = None
            if out is None:
                done = 0
            else:
                log.info("resuming an interrupted extraction at row %d of %d", done, n)
        if out is None:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, dim))
            _reserve(partial)
            hasher = hashlib.sha256()
        # rows hashed so far, in order; None once a batch arrived out of order (then the file is hashed at the end)
        state = {"done": done, "hashed": done}

        def write(idx, feats, ok):
            nonlocal hasher
            out[idx] = feats
            if not ok:
                return  # a batch with an undecodable image is never recorded as done
            if hasher is not None and state["hashed"] == int(idx[0]) and len(idx) == int(idx[-1]) - int(idx[0]) + 1:
                hasher.update(memoryview(np.ascontiguousarray(feats, dtype=np.float32).reshape(-1).view(np.uint8)))
                state["hashed"] = int(idx[-1]) + 1
            else:
                hasher = None
            # Batches arrive in order, so everything before idx[-1] + 1 is final; flush before recording it.
            out.flush()
            state["done"] = int(idx[-1]) + 1
            record = {"n": n, "dim": dim, "done": state["done"]}
            if hasher is not None:
                record["sha256"] = hasher.hexdigest()  # of rows [0, done): checked before a resume
            with atomic_path(progress_file) as tmp:
                tmp.write_text(json.dumps(record))

        if done < n:
            batch_size = resolve_batch_size(encoder, batch_size, kind, precision, n - done)
            loader = _loader(encoder, paths, batch_size, num_workers, draft, list(range(done, n)))
            try:
                _encode_all(encoder, loader, kind, precision, progress, n - done, write, compiled)
            except DataError:
                # Bad images are the input's fault, not an interruption: nothing partial is kept.
                discard()
                raise
        out.flush()
        # The checksum of the rows as computed (a resumed prefix was verified against its record first).
        digest = hasher.hexdigest() if hasher is not None and state["hashed"] == n else array_digest(out)
        _write_sidecar(entry, out.shape, digest, meta)
        out = None
        os.replace(partial, entry)
        progress_file.unlink(missing_ok=True)
    except OSError as exc:
        discard()
        raise cache_write_error(entry, exc) from exc
    return np.load(entry, mmap_mode="r", allow_pickle=False)

