"""The encode loop: images → float32 rows, in order.

What runs the model and how: the DataLoader (decode workers sized from the CPU count, bounded prefetch), the
precision (the autocast mode the numbers are computed in), `torch.compile` (built once per encoder and kind),
the automatic batch size (a memory probe on CUDA) and the batch loop that hands each batch's rows to a
writer. Where the rows go (memory, a resumable cache file, other ranks) is the caller's choice: see
`panderm.features.cache` and `panderm.features.extract`.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import shutil
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.images import open_image
from ..data.tables import list_items
from ..errors import DataError, ModelError
from ..models.base import Encoder
from ..models.cae_vit import cpu_autocast_active
from ..progress import Progress

# One logger for the whole package: the features command raises "panderm.features" to INFO for its notes.
log = logging.getLogger("panderm.features")




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


def embed_dtype(encoder: Encoder, precision: str) -> torch.dtype:
    """The dtype of `encoder.encode_image(x, "embed")` under `precision`'s autocast (one dummy image, once)."""
    memo = encoder.__dict__.setdefault("_panderm_embed_dtype", {})
    mode = effective_precision(encoder.device, precision)
    if mode not in memo:
        size = encoder.preprocess_spec.size
        with torch.inference_mode(), _autocast(encoder.device, precision):
            memo[mode] = encoder.encode_image(torch.zeros(1, 3, size, size, device=encoder.device), "embed").dtype
    return memo[mode]


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
        raise ModelError("torch.compile on CPU needs a C++ compiler (torch inductor builds C++ kernels): "
                         "install g++ (or set CXX) or run without compiling", param="compile", drop=True)


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
    # Importing dynamo costs about a second: only runs that compile pay it.
    from torch._dynamo.exc import TorchDynamoException

    try:
        return fn(x)[:n]
    except TorchDynamoException as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelError(f"torch.compile failed ({type(exc).__name__}: {first}); run without compiling",
                         param="compile", drop=True) from exc


# --------------------------------------------------------------------------- automatic batch size
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
    raise ModelError("no batch size fits in GPU memory (not even 1 image): free the GPU or give a batch size",
                     param="batch_size")


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
        log.info("batch size auto: %d on %s (no memory probe off CUDA)", CPU_AUTO_BATCH, device.type)
        return CPU_AUTO_BATCH
    memo = encoder.__dict__.setdefault("_panderm_auto_batch", {})
    key = (kind, effective_precision(device, precision))
    if key not in memo:
        memo[key] = _probe_cuda_batch(encoder, kind, precision)
    chosen = memo[key] if n is None else min(memo[key], max(1, n))
    log.info("batch size auto: %d (largest of %s that fits with %.0f%% headroom, %s, %d px input)", chosen,
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
    """Encode `paths` into the preallocated float32 [N, D] `out` (in memory: the cache is off, or a concurrent run)."""
    batch_size = resolve_batch_size(encoder, batch_size, kind, precision, len(paths))

    def write(idx, feats, ok):
        out[idx] = feats

    _encode_all(encoder, _loader(encoder, paths, batch_size, num_workers, draft), kind, precision, progress,
                len(paths), write, compiled)
    return out

