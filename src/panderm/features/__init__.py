"""Batched image and text embedding extraction with a content-keyed on-disk cache.

- `engine`: the DataLoader, precision, torch.compile, the automatic batch size and the encode loop.
- `cache`: cache keys, checksummed entries, the key's lock and the resumable writer.
- `extract`: `extract_features` (one process or torchrun) and the one cache-hit test.
- `text`: `extract_text_features` and the text-embedding cache shared with zero-shot class weights.

Every name other modules import from `panderm.features` is re-exported here (the private ones too: tests and
benchmarks reach for the loader, the compiled-function cache and the autocast context).
"""
# ruff: noqa: F401
from .cache import (CACHE_VERSION, CODE_PACKAGES, array_digest, cache_dir_default, cache_key, cache_write_error,
                    code_versions, entry_lock, read_entry, sidecar_path, write_entry)
from .engine import (_COMPILED_ATTR, AUTO_HEADROOM, BATCH_LADDER, CPU_AUTO_BATCH, CPU_AUTOCAST, PRECISIONS,
                     PREFETCH_IMAGES, ImageDataset, _autocast, _batch_fn, _loader, _prefetch_factor, autocast_dtype,
                     base_precision, cpu_autocast, default_workers, effective_precision, embed_dtype, is_oom,
                     resolve_batch_size, search_batch_size)
from .extract import FeatureResult, _run_distributed, extract_features
from .text import cached_text_embeddings, extract_text_features, text_cache_key

__all__ = [
    "AUTO_HEADROOM", "BATCH_LADDER", "CACHE_VERSION", "CODE_PACKAGES", "CPU_AUTOCAST", "CPU_AUTO_BATCH",
    "FeatureResult", "ImageDataset", "PRECISIONS", "PREFETCH_IMAGES", "array_digest", "autocast_dtype",
    "base_precision", "cache_dir_default", "cache_key", "cache_write_error", "cached_text_embeddings",
    "code_versions", "cpu_autocast", "default_workers", "effective_precision", "embed_dtype", "entry_lock",
    "extract_features",
    "extract_text_features", "is_oom", "read_entry", "resolve_batch_size", "search_batch_size", "sidecar_path",
    "text_cache_key", "write_entry",
]
