"""Batched image embedding extraction with a content-keyed on-disk cache.

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
it started.

Results stream into a memory-mapped `.npy` next to the entry, batch by batch
(`<key>.partial.npy`, resumable after an interruption): peak memory does not
grow with the number of images. `--no-cache` (and a run that finds another
process extracting the same key) encodes into memory and writes no file.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data.images import open_image
from .data.tables import list_items
from .errors import DataError, ModelError, PandermError
from .models.base import Encoder
from .report import atomic_path

log = logging.getLogger(__name__)
# 2: checksummed entries; keys cover the model configuration and the code versions.
CACHE_VERSION = 2
# Libraries whose version can change the numbers (decoding, transforms, model code).
CODE_PACKAGES = ("torch", "torchvision", "open_clip_torch", "transformers", "timm", "pillow")


class ImageDataset(Dataset):
    """Paths → (tensor, index, error). A failing image yields its error text, not an exception,
    so every bad file of a run can be reported together."""

    def __init__(self, paths: Sequence[os.PathLike], transform, size: int, draft: int | None = None,
                 exif: bool = True):
        self.paths = list(paths)
        self.transform = transform
        self.size = size
        self.draft = draft
        self.exif = exif

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(open_image(self.paths[i], exif=self.exif, draft=self.draft)), i, ""
        except DataError as exc:
            return torch.zeros(3, self.size, self.size), i, str(exc)


def default_workers(device: torch.device) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(16, max(2, cpus - 1))
    # On CPU the model needs the cores too, but a ViT-B is so slow there that extra decoders cost it nothing
    # measurable, while large JPEGs with a small model are decode-bound: 2 workers encode 200 photos of
    # 2048 px 1.35x faster than 1 on 2 cores (docs/BENCHMARKS.md, large JPEGs). More than 4 only contend.
    return min(cpus, 4) if cpus > 1 else 0


# The reference's spellings; `pure_*` (a whole-model cast there) run as autocast of the same dtype here.
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32", "pure_bf16", "pure_fp16")


# The reference doors on CPU: open_clip_train's get_autocast(precision, device_type=<the device>) wraps the image
# tower (and retrieval's text tower) in torch.autocast("cpu", dtype=float16 for amp, bfloat16 for amp_bf16); its
# other precisions get no autocast. `cpu_autocast(precision)` asks for that; only the doors use it.
CPU_AUTOCAST = "+cpu-autocast"
_CPU_AUTOCAST_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16, "amp_bfloat16": torch.bfloat16}


def cpu_autocast(precision: str) -> str:
    """`precision` as the reference runs it: on CPU, amp / amp_bf16 under CPU autocast (CUDA: unchanged)."""
    return precision if precision.endswith(CPU_AUTOCAST) else precision + CPU_AUTOCAST


def base_precision(precision: str) -> str:
    """`precision` without the cpu_autocast marker."""
    return precision[:-len(CPU_AUTOCAST)] if precision.endswith(CPU_AUTOCAST) else precision


@functools.lru_cache(maxsize=None)
def _cpu_autocast_works(dtype: torch.dtype) -> bool:
    """Whether this torch runs CPU autocast in `dtype` (older releases disable float16 with a warning; the
    reference then computes in float32 as well)."""
    import warnings

    from .models.cae_vit import cpu_autocast_active

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autocast("cpu", dtype=dtype):
            return cpu_autocast_active()


def effective_precision(device: torch.device, precision: str) -> str:
    """What the numbers are computed in: fp32 on CPU; fp16 or bf16 autocast on CUDA unless fp32.

    `cpu_autocast(precision)` on CPU gives "cpu-fp16" / "cpu-bf16" for amp / amp_bf16 (the reference doors).
    """
    marked = precision.endswith(CPU_AUTOCAST)
    precision = base_precision(precision)
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if marked and device.type == "cpu" and precision in _CPU_AUTOCAST_DTYPES \
            and _cpu_autocast_works(_CPU_AUTOCAST_DTYPES[precision]):
        return "cpu-bf16" if _CPU_AUTOCAST_DTYPES[precision] == torch.bfloat16 else "cpu-fp16"
    if device.type != "cuda" or precision == "fp32":
        return "fp32"
    return "bf16" if precision in ("bf16", "amp_bf16", "amp_bfloat16", "pure_bf16") else "fp16"


def autocast_dtype(mode: str) -> torch.dtype | None:
    """The reduced dtype of an effective precision (None for fp32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "cpu-fp16": torch.float16,
            "cpu-bf16": torch.bfloat16}.get(mode)


def _autocast(device: torch.device, precision: str):
    mode = effective_precision(device, precision)
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu" if mode.startswith("cpu-") else "cuda", dtype=autocast_dtype(mode))


def cache_dir_default() -> Path:
    from .models.demo import cache_root

    return cache_root() / "features"


@functools.lru_cache(maxsize=1)
def code_versions() -> dict[str, str | None]:
    """panderm's version and those of the libraries that compute or decode (part of every cache key)."""
    from importlib import metadata

    from . import __version__

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
    import fcntl

    entry = Path(entry)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fh = open(entry.with_name(entry.stem + ".lock"), "a")
    except OSError as exc:  # a read-only or full cache folder: one line, not a traceback
        raise cache_write_error(entry, exc) from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            held = True
        except OSError:
            held = False
        if not held:
            yield False
            return
        try:
            for stale in entry.parent.glob(f".{glob.escape(entry.stem)}.*.tmp"):
                stale.unlink(missing_ok=True)
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


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
                        "nothing partial was kept (free some space, or use --cache-dir elsewhere or --no-cache)")


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) file now: a full disk is then an OSError here, not a SIGBUS mid-extraction."""
    import errno

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


@dataclass
class FeatureResult:
    array: np.ndarray
    from_cache: bool
    key: str | None
    seconds: float
    kind: str


def _encode_batch(encoder: Encoder, x: torch.Tensor, kind: str) -> torch.Tensor:
    out = encoder.encode_image(x, "tokens" if kind == "tokens" else kind)
    if kind == "tokens":
        out = out[:, 0]  # the CLS row; full token maps are too large to keep per image
    return out.float()


def _loader(encoder, paths, batch_size, num_workers, draft, indices=None) -> DataLoader:
    device = encoder.device
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # More workers than cores only adds contention (reference scripts ask for 16).
    workers = default_workers(device) if num_workers is None else min(num_workers, cpus)
    spec = encoder.preprocess_spec
    dataset = ImageDataset(paths, encoder.preprocess, spec.size, draft if draft is not None else spec.draft_size,
                           exif=spec.exif_transpose)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,  # a list of indices is a valid sampler; None = in order
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",  # page-locked batches: the copy in _encode_all is asynchronous
        prefetch_factor=_prefetch_factor(workers, batch_size) if workers > 0 else None,
    )


# Decoded batches waiting in the workers' queues, in images (a 224 px float32 image is 0.6 MB): 4 batches per
# worker at the usual batch sizes, fewer for large (auto-fitted) batches so pinned host memory stays bounded.
PREFETCH_IMAGES = 4096


def _prefetch_factor(workers: int, batch_size: int) -> int:
    return max(1, min(4, PREFETCH_IMAGES // max(1, workers * batch_size)))


# --------------------------------------------------------------------------- torch.compile
_COMPILED_ATTR = "_panderm_compiled"


def _check_compile_possible(device: torch.device) -> None:
    """torch.compile's CPU backend writes and builds C++: say so in one line instead of a deep traceback."""
    if device.type == "cpu" and not (os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++"))):
        raise ModelError("--compile on CPU needs a C++ compiler (torch inductor builds C++ kernels): "
                         "install g++ (or set CXX) or run without --compile")


def _batch_fn(encoder: Encoder, kind: str, compiled: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """x → float32 features; with `compiled`, a torch.compile'd version built once per encoder and kind.

    Compilation does not change what is computed (same weights, same preprocessing): the cache key ignores it,
    and tests/test_features.py checks compiled == eager within 1e-4.
    """
    def eager(x: torch.Tensor) -> torch.Tensor:
        return _encode_batch(encoder, x, kind)

    if not compiled:
        return eager
    cache = encoder.__dict__.setdefault(_COMPILED_ATTR, {})
    if kind not in cache:
        _check_compile_possible(encoder.device)
        # Static shapes: the last, smaller batch is padded (see _encode_all), so one graph serves the whole run.
        cache[kind] = torch.compile(eager, dynamic=False)
        log.info("torch.compile: encoder forward (%s) compiled on first use", kind)
    return cache[kind]


def _call_compiled(fn, x: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    n = x.shape[0]
    if batch_size and n < batch_size:  # pad to the compiled shape rather than compile a second graph
        x = torch.cat([x, x.new_zeros((batch_size - n, *x.shape[1:]))])
    from torch._dynamo.exc import TorchDynamoException

    try:
        return fn(x)[:n]
    except TorchDynamoException as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"--compile failed ({type(exc).__name__}: {first}); run without --compile") from exc


# --------------------------------------------------------------------------- --batch-size auto
BATCH_LADDER = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
CPU_AUTO_BATCH = 64  # CPU throughput barely depends on the batch size (docs/BENCHMARKS.md); memory is not probed
AUTO_HEADROOM = 0.2  # the probe may use at most 80 % of the GPU memory that was free when it started


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def search_batch_size(try_batch: Callable[[int], float | None], ladder: Sequence[int] = BATCH_LADDER, *,
                      limit: int | None = None, headroom: float = AUTO_HEADROOM,
                      on_oom: Callable[[], None] | None = None) -> int:
    """The largest ladder size `b` for which `try_batch(b)` neither runs out of memory nor reports using more
    than `1 - headroom` of the memory (its return value: a fraction, or None when unknown).

    Sizes above `limit` (the number of images) are replaced by `limit`: one batch then holds everything.
    After an out-of-memory error `on_oom()` runs (empty the CUDA cache) outside the exception handler, so
    the failed attempt's tensors are already released; any other error propagates.
    """
    sizes = sorted({min(int(b), int(limit)) if limit else int(b) for b in ladder if b >= 1}, reverse=True)
    for b in sizes:
        ran_out = False
        try:
            used = try_batch(b)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is expected here
            if not is_oom(exc):
                raise
            ran_out = True
        if ran_out:
            log.debug("batch size %d: out of memory", b)
            if on_oom is not None:
                on_oom()
            continue
        if used is None or used <= 1.0 - headroom:
            return b
        log.debug("batch size %d: uses %.0f%% of the free memory, above the %.0f%% limit", b, 100 * used,
                  100 * (1 - headroom))
    raise ModelError("no batch size fits in GPU memory (not even 1 image): free the GPU or pass a --batch-size")


def resolve_batch_size(encoder: Encoder, batch_size: int | str, kind: str = "embed", precision: str = "amp",
                       n: int | None = None) -> int:
    """An int is returned as is; "auto" probes the GPU (once per encoder, kind and precision) or is 64 on CPU."""
    if batch_size != "auto":
        try:
            value = int(batch_size)
        except (TypeError, ValueError):
            value = 0
        if value < 1 or (isinstance(batch_size, float) and batch_size != value):
            raise ModelError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        return value
    device = encoder.device
    if device.type != "cuda":
        log.info("--batch-size auto: %d on %s (no memory probe off CUDA)", CPU_AUTO_BATCH, device.type)
        return CPU_AUTO_BATCH
    memo = encoder.__dict__.setdefault("_panderm_auto_batch", {})
    key = (kind, effective_precision(device, precision))
    if key not in memo:
        memo[key] = _probe_cuda_batch(encoder, kind, precision)
    chosen = memo[key] if n is None else min(memo[key], max(1, n))
    log.info("--batch-size auto: %d (largest of %s that fits with %.0f%% headroom, %s, %d px input)", chosen,
             "/".join(map(str, BATCH_LADDER[:4])) + "/...", 100 * AUTO_HEADROOM, key[1], encoder.preprocess_spec.size)
    return chosen


def _probe_cuda_batch(encoder: Encoder, kind: str, precision: str) -> int:
    """Run the encoder on synthetic batches of its input size, largest first, under the chosen precision."""
    device = encoder.device
    size = encoder.preprocess_spec.size

    def release():
        gc.collect()
        torch.cuda.empty_cache()

    release()
    free, _total = torch.cuda.mem_get_info(device)

    def attempt(b: int) -> float:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode(), _autocast(device, precision):
            x = torch.zeros(b, 3, size, size, device=device)
            out = _encode_batch(encoder, x, kind)
            del x, out
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / max(free, 1)

    try:
        return search_batch_size(attempt, on_oom=release)
    finally:
        release()


def _encode_all(encoder, loader, kind, precision, progress, total, write, compiled: bool = False) -> None:
    """Run the loader through the model; `write(idx, feats)` stores each batch; decode errors are collected."""
    device = encoder.device
    fn = _batch_fn(encoder, kind, compiled)
    errors: list[str] = []
    from .progress import Progress

    bar = Progress(total, f"encoding ({kind})", "img", enabled=progress)
    with torch.inference_mode(), _autocast(device, precision):
        for x, idx, err in loader:
            batch_errors = [e for e in err if e]
            errors.extend(batch_errors)
            x = x.to(device, non_blocking=True)  # pinned on CUDA: an async copy, kernels queue behind it
            feats = _call_compiled(fn, x, loader.batch_size) if compiled else fn(x)
            write(idx.numpy(), feats.cpu().numpy(), not batch_errors and not errors)
            bar.update(len(idx))
    bar.close()
    if errors:
        raise DataError(f"{len(errors)} image(s) could not be decoded: " + list_items(errors))


def _run_into(encoder, paths, kind, out: np.ndarray, batch_size, num_workers, precision, draft, progress,
              compiled: bool = False) -> np.ndarray:
    """Encode `paths` into the preallocated float32 [N, D] `out` (in memory: --no-cache, or a concurrent run)."""
    batch_size = resolve_batch_size(encoder, batch_size, kind, precision, len(paths))

    def write(idx, feats, ok):
        out[idx] = feats

    _encode_all(encoder, _loader(encoder, paths, batch_size, num_workers, draft), kind, precision, progress,
                len(paths), write, compiled)
    return out


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


def _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress,
                     compiled: bool = False) -> np.ndarray:
    """This rank's batches, then an all-gather: the full array on every rank."""
    import torch.distributed as dist

    from .distributed import gather_rows, rank_world, shard_indices

    rank, world = rank_world()
    if batch_size == "auto":  # every rank must deal the same batches: the smallest size any GPU can hold
        try:
            found: int | str = resolve_batch_size(encoder, "auto", kind, precision, len(paths))
        except ModelError as exc:  # still join the gather, or the other ranks would wait forever
            found = f"rank {rank}: {exc}"
        sizes = [None] * world
        dist.all_gather_object(sizes, found)
        failed = [s for s in sizes if isinstance(s, str)]
        if failed:
            raise ModelError(failed[0])
        batch_size = min(sizes)
    batch_size = resolve_batch_size(encoder, batch_size, kind, precision)
    mine = shard_indices(len(paths), batch_size, rank, world)
    idx_parts, row_parts = [], []

    def write(idx, feats, ok):
        idx_parts.append(idx)
        row_parts.append(feats)

    error = None
    try:
        _encode_all(encoder, _loader(encoder, paths, batch_size, num_workers, draft, mine), kind, precision,
                    progress and rank == 0, len(mine), write, compiled)
    except DataError as exc:
        error = str(exc)
    dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    rows = np.concatenate(row_parts) if row_parts else np.zeros((0, dim), np.float32)
    errors = [None] * world
    dist.all_gather_object(errors, error)  # every rank must fail together, or the others hang
    if any(errors):
        raise DataError("; ".join(e for e in errors if e))
    return gather_rows(idx, rows, len(paths))


def extract_features(
    encoder: Encoder,
    paths: Sequence[os.PathLike],
    kind: str = "embed",
    *,
    batch_size: int | str = 64,
    num_workers: int | None = None,
    precision: str = "amp",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    draft: int | None = None,
    progress: bool = True,
    compile: bool = False,
) -> FeatureResult:
    """Encode `paths` in order; returns float32 [N, D] (raw, not normalised).

    `progress`: a bar on a terminal, a line per tenth in a log, nothing under `panderm -q`
    (:mod:`panderm.progress`); only rank 0 reports under torchrun.

    `kind="tokens"` returns the CLS row of the token sequence. `batch_size="auto"` picks the largest batch that
    fits in GPU memory (64 on CPU), probed only when images are actually encoded. `compile=True` runs the
    encoder through `torch.compile` (built once per process and encoder; same numbers, same cache key).
    """
    if kind not in ("embed", "features", "tokens"):
        raise ModelError(f"unknown kind {kind!r} (embed, features, tokens)")
    if len(paths) == 0:
        raise DataError("no images to encode")
    if batch_size != "auto":
        batch_size = resolve_batch_size(encoder, batch_size)  # a bad value fails before any work
    if compile:
        _check_compile_possible(encoder.device)
    start = time.perf_counter()
    # Under CPU autocast the projection runs in the reduced dtype too, as in the reference: no `features` shortcut.
    cpu_ac = effective_precision(encoder.device, precision).startswith("cpu-")
    head = encoder.projection_head() if kind == "embed" and not cpu_ac else None
    if head is not None:
        return _embed_via_features(encoder, head, paths, start, batch_size=batch_size, num_workers=num_workers,
                                   precision=precision, cache=cache, cache_dir=cache_dir, draft=draft,
                                   progress=progress, compile=compile)
    from .distributed import rank_world

    if rank_world()[1] > 1:
        return _extract_distributed(encoder, paths, kind, batch_size, num_workers, precision, cache, cache_dir, draft,
                                    progress, start, compile)
    if not cache:
        # --no-cache writes no file at all (no temp file in TMPDIR for a killed run to leave behind).
        dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
        array = _run_into(encoder, paths, kind, np.empty((len(paths), dim), np.float32), batch_size, num_workers,
                          precision, draft, progress, compile)
        return FeatureResult(array, False, None, time.perf_counter() - start, kind)

    key = cache_key(encoder, kind, paths, precision, draft)
    folder = Path(cache_dir or cache_dir_default())
    entry = folder / f"{key}.npy"
    array = read_entry(entry, len(paths))
    if array is not None:
        log.info("features served from cache %s", entry)
        return FeatureResult(array, True, key, time.perf_counter() - start, kind)
    meta = {"model": encoder.describe(), "kind": kind, "n": len(paths)}
    array = _run_resumable(encoder, paths, kind, entry, batch_size, num_workers, precision, draft, progress, compile,
                           meta)
    return FeatureResult(array, False, key, time.perf_counter() - start, kind)


def _embed_via_features(encoder, head, paths, start, **kw) -> FeatureResult:
    """`embed` = head(`features`): one cached image pass serves the linear probe and zero-shot alike."""
    from .distributed import is_main, rank_world

    cache, cache_dir = kw["cache"], kw["cache_dir"]
    key = cache_key(encoder, "embed", paths, kw["precision"], kw["draft"]) if cache else None
    entry = Path(cache_dir or cache_dir_default()) / f"{key}.npy" if cache else None
    # Under torchrun the hit decision is taken once, by rank 0, in the `features` extraction below.
    if entry is not None and rank_world()[1] == 1:
        array = read_entry(entry, len(paths))
        if array is not None:
            return FeatureResult(array, True, key, time.perf_counter() - start, "embed")
    feats = extract_features(encoder, paths, "features", **kw)
    if getattr(head, "__name__", "") == "_identity":
        return FeatureResult(feats.array, feats.from_cache, feats.key, time.perf_counter() - start, "embed")
    device = encoder.device
    blocks = []
    with torch.inference_mode():
        for s in range(0, len(paths), 8192):
            x = torch.from_numpy(np.array(feats.array[s:s + 8192], dtype=np.float32)).to(device)
            blocks.append(head(x).float().cpu().numpy())
    array = np.concatenate(blocks)
    if entry is not None and is_main():
        write_entry(entry, array, {"model": encoder.describe(), "kind": "embed", "n": len(paths),
                                   "from": f"features entry {feats.key}"})
    return FeatureResult(array, feats.from_cache, key, time.perf_counter() - start, "embed")


def _extract_distributed(encoder, paths, kind, batch_size, num_workers, precision, cache, cache_dir, draft,
                         progress, start, compiled: bool = False) -> FeatureResult:
    """Every rank encodes its share; rank 0 alone writes the cache entry (shared file system assumed for hits)."""
    from .distributed import barrier, is_main

    import torch.distributed as dist

    key = cache_key(encoder, kind, paths, precision, draft) if cache else None
    entry = Path(cache_dir or cache_dir_default()) / f"{key}.npy" if cache else None
    # Rank 0 decides whether the entry is usable and every rank follows, so no rank waits alone in a collective.
    decision = [bool(entry is not None and is_main() and read_entry(entry, len(paths)) is not None)]
    dist.broadcast_object_list(decision, src=0)
    if decision[0]:
        if not entry.is_file():
            raise DataError(f"feature cache entry {entry} is on rank 0's disk only: use a shared --cache-dir or --no-cache")
        array = np.load(entry, mmap_mode="r", allow_pickle=False)
        return FeatureResult(array, True, key, time.perf_counter() - start, kind)
    array = _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress, compiled)
    if entry is not None and is_main():
        write_entry(entry, array, {"model": encoder.describe(), "kind": kind, "n": len(paths)})
    barrier()
    return FeatureResult(array, False, key, time.perf_counter() - start, kind)


def extract_text_features(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    precision: str = "amp",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Encode `texts` in order; float32 [N, D] raw text embeddings, cached by content.

    The key covers the encoder fingerprint, the code versions, the precision, the texts and their token ids (a
    tokenizer change is a new key); entries are checksummed like image entries.
    """
    if len(texts) == 0:
        raise DataError("no texts to encode")
    entry = None
    batches = [encoder.tokenize(list(texts[start:start + batch_size])) for start in range(0, len(texts), batch_size)]
    if cache:
        h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "fp": encoder.fingerprint, "kind": "text",
                                       "code": code_versions(), "batch": batch_size,
                                       "prec": effective_precision(encoder.device, precision)}).encode())
        for ids in batches:
            h.update(str(tuple(ids.shape)).encode() + np.ascontiguousarray(ids.cpu().numpy()).tobytes())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        entry = Path(cache_dir or cache_dir_default()) / f"text-{h.hexdigest()[:32]}.npy"
        cached = read_entry(entry, len(texts), what="text-embedding")
        if cached is not None:
            return np.array(cached)
    device = encoder.device
    chunks = []
    with torch.inference_mode(), _autocast(device, precision):
        for ids in batches:
            chunks.append(encoder.encode_text(ids.to(device)).float().cpu().numpy())
    array = np.concatenate(chunks).astype(np.float32)
    if entry is not None:
        write_entry(entry, array, {"model": encoder.describe(), "kind": "text", "n": len(texts)})
    return array
