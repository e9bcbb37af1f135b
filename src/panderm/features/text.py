"""Text embeddings and the one text-embedding cache.

Both text caches of the toolkit (raw caption embeddings here, zero-shot class weights in
`panderm.tasks.zeroshot.class_embeddings`) key their entries with `text_cache_key` and read / publish them with
`cached_text_embeddings`: checksummed entries like the image cache's, recomputed with one warning when damaged.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..models.base import Encoder
from .cache import CACHE_VERSION, cache_dir_default, code_versions, read_entry, write_entry
from .engine import _autocast, effective_precision


def text_cache_key(encoder: Encoder, precision: str, what: dict, batching: dict,
                   token_batches: Iterable[torch.Tensor], texts: Iterable[str] = ()) -> str:
    """The key of a text-embedding entry: the encoder fingerprint, `what` is embedded (e.g. the class names and
    templates), the code versions, `batching` (how the texts are batched), the effective precision, then every
    batch's token ids (a tokenizer change is a new key) and the `texts` themselves.

    The JSON header keeps this field order (it is hashed as written): existing entries keep their keys.
    """
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "fp": encoder.fingerprint, **what, "code": code_versions(),
                                   **batching, "prec": effective_precision(encoder.device, precision)}).encode())
    for ids in token_batches:
        h.update(str(tuple(ids.shape)).encode() + np.ascontiguousarray(ids.cpu().numpy()).tobytes())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:32]


def cached_text_embeddings(entry: Path | None, rows: int, compute: Callable[[], np.ndarray],
                           meta: dict) -> np.ndarray:
    """The [rows, D] float32 array at `entry` (a writable copy) when it is there and intact; otherwise `compute()`,
    published at `entry` with `meta` in its sidecar. `entry=None`: no cache, nothing read or written."""
    if entry is not None:
        cached = read_entry(entry, rows, what="text-embedding")
        if cached is not None:
            return np.array(cached)
    array = compute()
    if entry is not None:
        write_entry(entry, array, meta)
    return array


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
    batches = [encoder.tokenize(list(texts[start:start + batch_size])) for start in range(0, len(texts), batch_size)]
    entry = None
    if cache:
        key = text_cache_key(encoder, precision, {"kind": "text"}, {"batch": batch_size}, batches, texts)
        entry = Path(cache_dir or cache_dir_default()) / f"text-{key}.npy"

    def compute() -> np.ndarray:
        device = encoder.device
        chunks = []
        with torch.inference_mode(), _autocast(device, precision):
            for ids in batches:
                chunks.append(encoder.encode_text(ids.to(device)).float().cpu().numpy())
        return np.concatenate(chunks).astype(np.float32)

    return cached_text_embeddings(entry, len(texts), compute,
                                  {"model": encoder.describe(), "kind": "text", "n": len(texts)})
