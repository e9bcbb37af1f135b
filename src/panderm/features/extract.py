"""`extract_features`: image paths → float32 [N, D] rows, served from the cache when it holds them.

One process encodes through the resumable cache writer (`cache`); under torchrun every rank encodes its share of
the batches and the rows are gathered back in order (docs/REFERENCE.md "Sharded extraction and finetuning").
Whether the cache already holds a key is decided in one place, `_lookup`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..distributed import barrier, gather_rows, is_main, rank_world, shard_indices
from ..errors import DataError, ModelError
from ..models.base import Encoder
from .cache import _run_resumable, cache_dir_default, cache_key, read_entry, write_entry
from .engine import (_check_compile_possible, _encode_all, _loader, _run_into, effective_precision, log,
                     resolve_batch_size)


@dataclass
class FeatureResult:
    array: np.ndarray
    from_cache: bool
    key: str | None
    seconds: float
    kind: str


def _lookup(encoder: Encoder, kind: str, paths: Sequence[os.PathLike], precision: str, draft: int | None,
            cache: bool, cache_dir, *, probe: bool = True,
            collective: bool = False) -> tuple[str | None, Path | None, np.ndarray | None]:
    """The one cache-hit test: (key, entry, the verified cached array or None); key and entry are None without
    `cache`. `probe=False` names the entry without reading it.

    `collective` (under torchrun, every rank calls it, with or without `cache`): rank 0 alone reads and verifies
    the entry and every rank follows its decision, so no rank waits alone in a later collective.
    """
    key = cache_key(encoder, kind, paths, precision, draft) if cache else None
    entry = Path(cache_dir or cache_dir_default()) / f"{key}.npy" if cache else None
    if not collective:
        return key, entry, read_entry(entry, len(paths)) if entry is not None and probe else None
    decision = [bool(entry is not None and is_main() and read_entry(entry, len(paths)) is not None)]
    dist.broadcast_object_list(decision, src=0)
    if not decision[0]:
        return key, entry, None
    if not entry.is_file():
        raise DataError(f"feature cache entry {entry} is on rank 0's disk only: put the feature cache on a shared "
                        "file system (e.g. PANDERM_CACHE=DIR) or turn it off", param="cache_dir")
    return key, entry, np.load(entry, mmap_mode="r", allow_pickle=False)


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
    if rank_world()[1] > 1:
        return _extract_distributed(encoder, paths, kind, batch_size, num_workers, precision, cache, cache_dir, draft,
                                    progress, start, compile)
    if not cache:
        # Without the cache no file is written at all (no temp file in TMPDIR for a killed run to leave behind).
        dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
        array = _run_into(encoder, paths, kind, np.empty((len(paths), dim), np.float32), batch_size, num_workers,
                          precision, draft, progress, compile)
        return FeatureResult(array, False, None, time.perf_counter() - start, kind)

    key, entry, array = _lookup(encoder, kind, paths, precision, draft, cache, cache_dir)
    if array is not None:
        log.info("features served from cache %s", entry)
        return FeatureResult(array, True, key, time.perf_counter() - start, kind)
    meta = {"model": encoder.describe(), "kind": kind, "n": len(paths)}
    array = _run_resumable(encoder, paths, kind, entry, batch_size, num_workers, precision, draft, progress, compile,
                           meta)
    return FeatureResult(array, False, key, time.perf_counter() - start, kind)


def _embed_via_features(encoder, head, paths, start, **kw) -> FeatureResult:
    """`embed` = head(`features`): one cached image pass serves the linear probe and zero-shot alike."""
    # Under torchrun the hit decision is taken once, by rank 0, in the `features` extraction below.
    key, entry, array = _lookup(encoder, "embed", paths, kw["precision"], kw["draft"], kw["cache"], kw["cache_dir"],
                                probe=rank_world()[1] == 1)
    if array is not None:
        return FeatureResult(array, True, key, time.perf_counter() - start, "embed")
    feats = extract_features(encoder, paths, "features", **kw)
    if encoder.embed_is_features:
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
    key, entry, array = _lookup(encoder, kind, paths, precision, draft, cache, cache_dir, collective=True)
    if array is not None:
        return FeatureResult(array, True, key, time.perf_counter() - start, kind)
    array = _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress, compiled)
    if entry is not None and is_main():
        write_entry(entry, array, {"model": encoder.describe(), "kind": kind, "n": len(paths)})
    barrier()
    return FeatureResult(array, False, key, time.perf_counter() - start, kind)


def _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress,
                     compiled: bool = False) -> np.ndarray:
    """This rank's batches, then an all-gather: the full array on every rank."""
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
