"""The reference's own retrieval computations (docs/REFERENCE.md, Retrieval): the full N x N argsort ranking
with torch's order among equal scores, and the CLIP validation loss, both as the reference door needs them."""

from __future__ import annotations

import math
import os
from contextlib import nullcontext as _nullcontext
from typing import Any

import numpy as np
import torch

from panderm.errors import DataError

from .rank import (
    DEFAULT_CHUNK_SIZE,
    _as_embeddings,
    _check_pair_count,
    _check_same_dim,
    _compute_dtype,
    _row_norms,
)

#: The reference evaluates retrieval with a batch size of 256; the in-batch loss depends on it.
DEFAULT_LOSS_BATCH_SIZE = 256


def argsort_bytes(n: int, itemsize: int) -> int:
    """Peak memory of :func:`argsort_ranks` for N pairs: the N x N scores, argsort's sorted copy (and a
    contiguous copy of the transposed matrix) in the scores' dtype, and its int64 indices."""
    return n * n * (3 * itemsize + 8)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def argsort_fits(n: int, itemsize: int, available: int | None = None) -> bool:
    """Whether the reference's N x N ranking takes at most half the available memory (4 GB when unknown)."""
    available = _available_memory() if available is None else available
    return argsort_bytes(n, itemsize) <= (available // 2 if available else 4 << 30)


def argsort_ranks(image_features: torch.Tensor, text_features: torch.Tensor,
                  logit_scale: Any) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ranks (open_clip ``get_clip_metrics``; docs/REFERENCE.md, Retrieval), ties included.

    The scores are ``(logit_scale · I) @ Tᵀ`` over the full N x N matrix, in the features' dtype (float16
    for features computed under CPU autocast), with ``logit_scale`` a float32 scalar tensor as the model
    returns it. Every row of the matrix (image_to_text) and of its transpose, a view as there
    (text_to_image), is ordered by ``torch.argsort(descending=True)``; the rank is the position of the
    ground truth. Among equal scores that order is torch's unstable sort, not row order: it is what the
    reference reports for repeated captions. Memory: :func:`argsort_bytes`.
    Returns 0-based (image_to_text, text_to_image) ranks.
    """
    n = image_features.shape[0]
    scale = torch.as_tensor(logit_scale, dtype=torch.float32)
    truth = torch.arange(n)[:, None]
    out = []
    with torch.inference_mode():
        logits = scale * image_features @ text_features.t()
        for mat in (logits, logits.t()):
            order = torch.argsort(mat, descending=True)
            ranks = np.empty(n, dtype=np.int64)
            for a in range(0, n, 1024):  # where the ground truth sits, a block of rows at a time
                ranks[a:a + 1024] = (order[a:a + 1024] == truth[a:a + 1024]).nonzero()[:, 1].numpy()
            del order
            out.append(ranks)
    return out[0], out[1]


def reference_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: Any,
                        batch_size: int, autocast_dtype: torch.dtype | None = None) -> float:
    """The reference's ``clip_val_loss`` as it accumulates it: per batch of ``batch_size`` rows
    ``(CE(s·I_b @ T_bᵀ) + CE of the transpose) / 2`` (under CPU autocast in ``autocast_dtype`` when given,
    where the matmul is in that dtype and the cross-entropy in float32), summed as a float32 tensor weighted
    by batch size, divided by N."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"loss batch size must be a positive integer, got {batch_size!r}")
    scale = torch.as_tensor(_check_logit_scale(logit_scale), dtype=torch.float32)
    n = image_features.shape[0]
    total: Any = 0.0
    with torch.inference_mode():
        for a in range(0, n, int(batch_size)):
            b = min(a + int(batch_size), n)
            ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None else _nullcontext()
            with ctx:
                logits = scale * image_features[a:b] @ text_features[a:b].t()
                labels = torch.arange(b - a)
                loss = (torch.nn.functional.cross_entropy(logits, labels)
                        + torch.nn.functional.cross_entropy(logits.t(), labels)) / 2
            total = total + loss * (b - a)
    return float(total / n)


# --------------------------------------------------------------------------- CLIP loss


def _check_logit_scale(logit_scale: Any) -> float:
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise DataError(f"logit_scale must be a single number, got shape {tuple(logit_scale.shape)}")
        logit_scale = logit_scale.detach().cpu().item()
    try:
        value = float(logit_scale)
    except (TypeError, ValueError) as exc:
        raise DataError(f"logit_scale must be a number, got {logit_scale!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"logit_scale must be a positive finite multiplier (logit_scale.exp()), got {value}")
    return value


def _clip_loss(
    I: torch.Tensor,
    T: torch.Tensor,
    i_norms: torch.Tensor,
    t_norms: torch.Tensor,
    logit_scale: Any,
    batch_size: Any,
    dtype: torch.dtype,
) -> float:
    scale = _check_logit_scale(logit_scale)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"loss batch size must be a positive integer, got {batch_size!r}")
    n = I.shape[0]
    total = 0.0
    with torch.inference_mode():
        for a in range(0, n, int(batch_size)):
            b = min(a + int(batch_size), n)
            im = I[a:b].to(dtype) / i_norms[a:b, None]
            tx = T[a:b].to(dtype) / t_norms[a:b, None]
            logits = scale * im @ tx.T
            labels = torch.arange(b - a, device=logits.device)
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            total += float(loss) * (b - a)  # weighted by batch size: the last batch may be short
    return total / n


def clip_val_loss(
    image_emb: Any,
    text_emb: Any,
    logit_scale: float,
    batch_size: int = DEFAULT_LOSS_BATCH_SIZE,
) -> float:
    """The reference's ``clip_val_loss`` (open_clip ``evaluate``; docs/REFERENCE.md, Retrieval).

    Rows are cut into consecutive batches of ``batch_size`` (the last one may be
    shorter, as with ``drop_last=False``). In each batch the logits are
    ``logit_scale * img @ txt.T`` on L2-normalised embeddings, the loss is the
    mean of the image->text and text->image cross-entropies against the
    diagonal, and the batch losses are averaged weighted by batch size. The
    value therefore depends on ``batch_size`` (the reference used 256).

    ``logit_scale`` is the multiplier, i.e. the model's ``logit_scale.exp()``.
    """
    I = _as_embeddings(image_emb, "image embeddings")
    T = _as_embeddings(text_emb, "text embeddings")
    _check_pair_count(I.shape[0], T.shape[0])
    _check_same_dim(I, T, "image embeddings", "text embeddings")
    dtype = _compute_dtype(I, T)
    chunk = DEFAULT_CHUNK_SIZE
    i_norms = _row_norms(I, "image embeddings", dtype, chunk)
    t_norms = _row_norms(T, "text embeddings", dtype, chunk)
    return _clip_loss(I, T, i_norms, t_norms, logit_scale, batch_size, dtype)
