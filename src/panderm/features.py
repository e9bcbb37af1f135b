"""Batched image embedding extraction with a content-keyed on-disk cache.

The cache key covers everything that can change the numbers: the encoder
fingerprint (weights + preprocessing), the output kind and every image's path,
size and modification time. A repeat run on the same images reads the `.npy`
back instead of re-encoding; touching an image or changing the model or its
preprocessing gives a new key. Entries are written once, atomically (temp file +
rename), so concurrent runs never see half a file.

Results stream into a memory-mapped `.npy` batch by batch: peak memory does not
grow with the number of images.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data.images import open_image
from .data.tables import list_items
from .errors import DataError, ModelError
from .models.base import Encoder
from .report import atomic_path

log = logging.getLogger(__name__)
CACHE_VERSION = 1


class ImageDataset(Dataset):
    """Paths → (tensor, index, error). A failing image yields its error text, not an exception,
    so every bad file of a run can be reported together."""

    def __init__(self, paths: Sequence[os.PathLike], transform, size: int, draft: int | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.size = size
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(open_image(self.paths[i], draft=self.draft)), i, ""
        except DataError as exc:
            return torch.zeros(3, self.size, self.size), i, str(exc)


def default_workers(device: torch.device) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return min(16, max(2, cpus - 1))
    # On CPU the model needs the cores too: one decoding worker keeps up with
    # ViT-sized models on small images (docs/BENCHMARKS.md).
    return 1 if cpus > 1 else 0


# The reference's spellings; `pure_*` (a whole-model cast there) run as autocast of the same dtype here.
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32", "pure_bf16", "pure_fp16")


def effective_precision(device: torch.device, precision: str) -> str:
    """What the numbers are computed in: fp32 on CPU; fp16 or bf16 autocast on CUDA unless fp32."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if device.type != "cuda" or precision == "fp32":
        return "fp32"
    return "bf16" if precision in ("bf16", "amp_bf16", "amp_bfloat16", "pure_bf16") else "fp16"


def _autocast(device: torch.device, precision: str):
    mode = effective_precision(device, precision)
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def cache_dir_default() -> Path:
    from .models.demo import cache_root

    return cache_root() / "features"


def cache_key(encoder: Encoder, kind: str, paths: Sequence[os.PathLike], precision: str = "amp",
              draft: int | None = None) -> str:
    """Everything that changes the numbers: weights + preprocessing, kind, precision, decode size, every file."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "fp": encoder.fingerprint, "kind": kind,
                         "pre": encoder.preprocess_spec.describe(),
                         "prec": effective_precision(encoder.device, precision), "draft": draft},
                        sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.fspath(p)}\0missing\n".encode())
    return h.hexdigest()[:32]


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
    dataset = ImageDataset(paths, encoder.preprocess, encoder.preprocess_spec.size, draft)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,  # a list of indices is a valid sampler; None = in order
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


def _encode_all(encoder, loader, kind, precision, progress, total, write) -> None:
    """Run the loader through the model; `write(idx, feats)` stores each batch; decode errors are collected."""
    device = encoder.device
    errors: list[str] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"encoding ({kind})", unit="img", leave=False)
    with torch.inference_mode(), _autocast(device, precision):
        for x, idx, err in loader:
            batch_errors = [e for e in err if e]
            errors.extend(batch_errors)
            feats = _encode_batch(encoder, x.to(device, non_blocking=True), kind)
            write(idx.numpy(), feats.cpu().numpy(), not batch_errors and not errors)
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    if errors:
        raise DataError(f"{len(errors)} image(s) could not be decoded: " + list_items(errors))


def _run(encoder, paths, kind, target: Path, batch_size, num_workers, precision, draft, progress) -> None:
    """Stream features into a memory-mapped .npy at `target` (one process)."""
    dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=(len(paths), dim))

    def write(idx, feats, ok):
        out[idx] = feats

    _encode_all(encoder, _loader(encoder, paths, batch_size, num_workers, draft), kind, precision, progress,
                len(paths), write)
    out.flush()


def _run_resumable(encoder, paths, kind, entry: Path, batch_size, num_workers, precision, draft, progress) -> None:
    """Extract into `<key>.partial.npy`, recording progress after every batch, then rename it to `entry`.

    A run stopped by Ctrl-C, SIGTERM or a crash leaves the partial file and its progress record; the next run
    with the same cache key continues from the first unfinished row. A lock keeps two concurrent runs off the
    same partial file (the second one extracts into a private temporary file instead).
    """
    import fcntl

    partial = entry.with_name(entry.stem + ".partial.npy")
    progress_file = entry.with_name(entry.stem + ".partial.json")
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = open(entry.with_name(entry.stem + ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        with atomic_path(entry, suffix=".npy") as tmp:
            _run(encoder, paths, kind, tmp, batch_size, num_workers, precision, draft, progress)
        return
    try:
        n = len(paths)
        dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
        done = 0
        if partial.is_file() and progress_file.is_file():
            try:
                record = json.loads(progress_file.read_text())
                if record.get("n") == n and record.get("dim") == dim and 0 <= record.get("done", -1) <= n:
                    done = int(record["done"])
            except (ValueError, OSError):
                done = 0
        if done:
            out = np.lib.format.open_memmap(partial, mode="r+")
            log.info("resuming an interrupted extraction at row %d of %d", done, n)
        else:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, dim))
        state = {"done": done}

        def write(idx, feats, ok):
            out[idx] = feats
            if not ok:
                return  # a batch with an undecodable image is never recorded as done
            # Batches arrive in order, so everything before idx[-1] + 1 is final; flush before recording it.
            out.flush()
            state["done"] = int(idx[-1]) + 1
            with atomic_path(progress_file) as tmp:
                tmp.write_text(json.dumps({"n": n, "dim": dim, "done": state["done"]}))

        if done < n:
            loader = _loader(encoder, paths, batch_size, num_workers, draft, list(range(done, n)))
            try:
                _encode_all(encoder, loader, kind, precision, progress, n - done, write)
            except DataError:
                # Bad images are the input's fault, not an interruption: nothing partial is kept.
                del out
                partial.unlink(missing_ok=True)
                progress_file.unlink(missing_ok=True)
                raise
        out.flush()
        del out
        os.replace(partial, entry)
        progress_file.unlink(missing_ok=True)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress) -> np.ndarray:
    """This rank's batches, then an all-gather: the full array on every rank."""
    from .distributed import gather_rows, rank_world, shard_indices

    rank, world = rank_world()
    mine = shard_indices(len(paths), batch_size, rank, world)
    idx_parts, row_parts = [], []

    def write(idx, feats, ok):
        idx_parts.append(idx)
        row_parts.append(feats)

    error = None
    try:
        _encode_all(encoder, _loader(encoder, paths, batch_size, num_workers, draft, mine), kind, precision,
                    progress and rank == 0, len(mine), write)
    except DataError as exc:
        error = str(exc)
    dim = encoder.output_dim("tokens" if kind == "tokens" else kind)
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    rows = np.concatenate(row_parts) if row_parts else np.zeros((0, dim), np.float32)
    import torch.distributed as dist

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
    batch_size: int = 64,
    num_workers: int | None = None,
    precision: str = "amp",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    draft: int | None = None,
    progress: bool = False,
) -> FeatureResult:
    """Encode `paths` in order; returns float32 [N, D] (raw, not normalised).

    `kind="tokens"` returns the CLS row of the token sequence.
    """
    if kind not in ("embed", "features", "tokens"):
        raise ModelError(f"unknown kind {kind!r} (embed, features, tokens)")
    if len(paths) == 0:
        raise DataError("no images to encode")
    start = time.perf_counter()
    head = encoder.projection_head() if kind == "embed" else None
    if head is not None:
        return _embed_via_features(encoder, head, paths, start, batch_size=batch_size, num_workers=num_workers,
                                   precision=precision, cache=cache, cache_dir=cache_dir, draft=draft,
                                   progress=progress)
    from .distributed import rank_world

    if rank_world()[1] > 1:
        return _extract_distributed(encoder, paths, kind, batch_size, num_workers, precision, cache, cache_dir, draft,
                                    progress, start)
    if not cache:
        import tempfile

        # --no-cache writes nothing to the cache folder: a private temp file, read back, then deleted.
        with tempfile.TemporaryDirectory(prefix="panderm-") as tmpdir:
            tmp = Path(tmpdir) / "features.npy"
            _run(encoder, paths, kind, tmp, batch_size, num_workers, precision, draft, progress)
            array = np.array(np.load(tmp, mmap_mode="r", allow_pickle=False))
        return FeatureResult(array, False, None, time.perf_counter() - start, kind)

    key = cache_key(encoder, kind, paths, precision, draft)
    folder = Path(cache_dir or cache_dir_default())
    entry = folder / f"{key}.npy"
    if entry.is_file():
        try:
            array = np.load(entry, mmap_mode="r", allow_pickle=False)
            if array.shape[0] == len(paths):
                log.info("features served from cache %s", entry)
                return FeatureResult(array, True, key, time.perf_counter() - start, kind)
        except (ValueError, OSError):
            log.warning("ignoring unreadable cache entry %s", entry)
    _run_resumable(encoder, paths, kind, entry, batch_size, num_workers, precision, draft, progress)
    meta = {"model": encoder.describe(), "kind": kind, "n": len(paths), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(folder / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    array = np.load(entry, mmap_mode="r", allow_pickle=False)
    return FeatureResult(array, False, key, time.perf_counter() - start, kind)


def _embed_via_features(encoder, head, paths, start, **kw) -> FeatureResult:
    """`embed` = head(`features`): one cached image pass serves the linear probe and zero-shot alike."""
    from .distributed import is_main, rank_world

    cache, cache_dir = kw["cache"], kw["cache_dir"]
    key = cache_key(encoder, "embed", paths, kw["precision"], kw["draft"]) if cache else None
    entry = Path(cache_dir or cache_dir_default()) / f"{key}.npy" if cache else None
    # Under torchrun the hit decision is taken once, by rank 0, in the `features` extraction below.
    if entry is not None and rank_world()[1] == 1 and entry.is_file():
        array = np.load(entry, mmap_mode="r", allow_pickle=False)
        if array.shape[0] == len(paths):
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
        from .report import write_npy

        write_npy(entry, array)
    return FeatureResult(array, feats.from_cache, key, time.perf_counter() - start, "embed")


def _extract_distributed(encoder, paths, kind, batch_size, num_workers, precision, cache, cache_dir, draft,
                         progress, start) -> FeatureResult:
    """Every rank encodes its share; rank 0 alone writes the cache entry (shared file system assumed for hits)."""
    from .distributed import barrier, is_main

    import torch.distributed as dist

    key = cache_key(encoder, kind, paths, precision, draft) if cache else None
    entry = Path(cache_dir or cache_dir_default()) / f"{key}.npy" if cache else None
    # Rank 0 decides whether the entry is usable and every rank follows, so no rank waits alone in a collective.
    decision = [bool(entry is not None and is_main() and entry.is_file()
                     and np.load(entry, mmap_mode="r", allow_pickle=False).shape[0] == len(paths))]
    dist.broadcast_object_list(decision, src=0)
    if decision[0]:
        if not entry.is_file():
            raise DataError(f"feature cache entry {entry} is on rank 0's disk only: use a shared --cache-dir or --no-cache")
        array = np.load(entry, mmap_mode="r", allow_pickle=False)
        return FeatureResult(array, True, key, time.perf_counter() - start, kind)
    array = _run_distributed(encoder, paths, kind, batch_size, num_workers, precision, draft, progress)
    if entry is not None and is_main():
        from .report import write_npy

        write_npy(entry, array)
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
    """Encode `texts` in order; float32 [N, D] raw text embeddings, cached by content."""
    if len(texts) == 0:
        raise DataError("no texts to encode")
    key = None
    if cache:
        h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "fp": encoder.fingerprint, "kind": "text",
                                       "prec": effective_precision(encoder.device, precision)}).encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        key = h.hexdigest()[:32]
        entry = Path(cache_dir or cache_dir_default()) / f"text-{key}.npy"
        if entry.is_file():
            return np.load(entry, allow_pickle=False)
    device = encoder.device
    chunks = []
    with torch.inference_mode(), _autocast(device, precision):
        for start in range(0, len(texts), batch_size):
            ids = encoder.tokenize(list(texts[start:start + batch_size])).to(device)
            chunks.append(encoder.encode_text(ids).float().cpu().numpy())
    array = np.concatenate(chunks).astype(np.float32)
    if cache:
        from .report import write_npy

        write_npy(entry, array)
    return array
