"""Zero-shot cross-modal retrieval metrics on precomputed embeddings.

This module is pure tensor code: it takes image and text embeddings (one
image-text pair per row, as in the reference CSV) and returns ranks and metrics.
Loading models and CSVs is done elsewhere.

Reference behaviour (docs/REFERENCE.md, Retrieval; open_clip ``get_clip_metrics``)
---------------------------------------------------------------------------------
For ``image_to_text`` the query is image ``i`` and the ground truth is text
``i``; ``text_to_image`` is the transpose. ``r_i`` is the 0-based rank of the
ground truth when the similarities of query ``i`` are sorted in descending
order, and

* ``*_R@k``        = mean(r < k)
* ``*_mean_rank``   = mean(r) + 1
* ``*_median_rank`` = floor(median(r)) + 1

We add ``R@1``, ``*_mean_recall`` (mean of R@5, R@10 and R@50, whatever ``ks``
is), ``mean_recall`` (the average of the two directions' mean recalls, the
"Mean Recall" of the DermFM-Zero README) and bootstrap CIs.

Embeddings are L2-normalised here, row by row, so callers may pass raw or
already-normalised features; a row of zeros cannot be normalised and is an error.
Inputs in float64 are compared in float64, everything else in float32.

Modules: this one (metrics, result, bootstrap; every public name is importable from here),
``rank`` (input checks, groups, the chunked ranking and its tie rule), ``reference``
(the reference's full-matrix argsort ranking and CLIP loss), ``data`` (image-caption pairs), ``pipeline``
(the run over images and captions: features, metrics, files).

Duplicates and groups
---------------------
The reference counts duplicates (the same image with several captions, or the
same caption for several images) as *competitors*: they can push the ground
truth down, and an exact duplicate at a lower row costs one rank under the tie
rule above. That stays the default here (no groups given), so published numbers
reproduce.

Group mode (``image_groups`` and/or ``text_groups``, e.g. from
:func:`duplicate_groups` of the image paths / captions, or a group-by
column naming the image) follows CLIP_benchmark's multi-caption recall instead:

* each distinct image and each distinct caption is one item, represented by the
  embedding of its first row; image_to_text has one query per distinct image,
  text_to_image one per distinct caption, and each distinct item is one key
  (a competitor with three rows is counted once, not three times);
* rows linked through a shared image or a shared caption form one group
  (connected components, so the relation is transitive), and every key of the
  query's group is a hit;
* the rank is the 0-based position of the *first* hit: the number of
  non-hits scoring above the best-scoring hit (ties broken by index as above).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from panderm.errors import DataError

from .rank import (  # noqa: F401  (re-exported: the public home of the ranking names stays here)
    _MISSING,
    DEFAULT_CHUNK_SIZE,
    _as_embeddings,
    _check_chunk_size,
    _check_ks,
    _check_pair_count,
    _check_same_dim,
    _compute_dtype,
    _group_key,
    _labels_1d,
    _on_device,
    _rank_core,
    _resolve_device,
    _row_groups,
    _row_norms,
    duplicate_groups,
    rank_of_targets,
)
from .reference import (  # noqa: F401
    DEFAULT_LOSS_BATCH_SIZE,
    _available_memory,
    _check_logit_scale,
    _clip_loss,
    argsort_bytes,
    argsort_fits,
    argsort_ranks,
    clip_val_loss,
    reference_clip_loss,
)

__all__ = [
    "DEFAULT_KS",
    "MEAN_RECALL_KS",
    "DEFAULT_CHUNK_SIZE",
    "DIRECTIONS",
    "DEFAULT_LOSS_BATCH_SIZE",
    "RetrievalResult",
    "rank_of_targets",
    "rank_metrics",
    "retrieval_metrics",
    "clip_val_loss",
    "argsort_ranks",
    "argsort_fits",
    "reference_clip_loss",
    "duplicate_groups",
    "bootstrap_retrieval_ci",
]

#: Recall cut-offs reported by default (the reference reports 5, 10, 50; we add 1).
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)
#: The recalls averaged into ``*_mean_recall``, independent of the ``ks`` asked for.
MEAN_RECALL_KS: tuple[int, ...] = (5, 10, 50)
#: Metric-name prefixes, in output order.
DIRECTIONS: tuple[str, str] = ("image_to_text", "text_to_image")


# --------------------------------------------------------------------------- metrics


def rank_metrics(ranks: Any, ks: Sequence[int] = DEFAULT_KS, prefix: str = "") -> dict[str, float]:
    """Metrics of one direction from its 0-based ranks.

    Returns ``{prefix_R@k for k in ks, prefix_mean_rank, prefix_median_rank,
    prefix_mean_recall}`` (keys without a leading underscore when `prefix` is
    empty). ``mean_recall`` always averages R@5, R@10 and R@50.
    """
    r = np.asarray(ranks)
    if r.ndim != 1 or len(r) == 0:
        raise DataError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    ks = _check_ks(ks)
    p = f"{prefix}_" if prefix else ""
    out: dict[str, float] = {f"{p}R@{k}": float(np.mean(r < k)) for k in ks}
    out[f"{p}mean_rank"] = float(np.mean(r)) + 1.0
    out[f"{p}median_rank"] = float(np.floor(np.median(r))) + 1.0
    out[f"{p}mean_recall"] = float(np.mean([np.mean(r < k) for k in MEAN_RECALL_KS]))
    return out


def _both_directions(ranks_i2t: np.ndarray, ranks_t2i: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    out = rank_metrics(ranks_i2t, ks, DIRECTIONS[0])
    out.update(rank_metrics(ranks_t2i, ks, DIRECTIONS[1]))
    out["mean_recall"] = (out[f"{DIRECTIONS[0]}_mean_recall"] + out[f"{DIRECTIONS[1]}_mean_recall"]) / 2
    return out


@dataclass(frozen=True)
class RetrievalResult:
    """What :func:`retrieval_metrics` returns.

    Attributes
    ----------
    metrics:
        ``image_to_text_R@k`` (k in ks), ``image_to_text_mean_rank``,
        ``image_to_text_median_rank``, ``image_to_text_mean_recall``, the same for
        ``text_to_image``, then ``mean_recall`` (average of the two directions),
        ``clip_val_loss`` (only when ``logit_scale`` was given), ``num_samples``
        (pairs), ``num_images`` / ``num_texts`` (distinct query items; equal to
        ``num_samples`` without groups).
    image_to_text_ranks, text_to_image_ranks:
        0-based rank per *query*: one per distinct image / caption in group mode,
        one per row otherwise. Feed these to :func:`bootstrap_retrieval_ci`.
    image_query_of_row, text_query_of_row:
        For each row, the index of its query in the arrays above (identity
        without groups).
    row_groups:
        Group id per row in group mode, else None.
    """

    metrics: dict[str, float]
    image_to_text_ranks: np.ndarray
    text_to_image_ranks: np.ndarray
    image_query_of_row: np.ndarray
    text_query_of_row: np.ndarray
    row_groups: np.ndarray | None = None

    @property
    def image_to_text_row_ranks(self) -> np.ndarray:
        """Rank of each row's image query (per-row CSV output)."""
        return self.image_to_text_ranks[self.image_query_of_row]

    @property
    def text_to_image_row_ranks(self) -> np.ndarray:
        """Rank of each row's caption query (per-row CSV output)."""
        return self.text_to_image_ranks[self.text_query_of_row]


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    ks: Sequence[int] = DEFAULT_KS,
    image_groups: Any = None,
    text_groups: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    logit_scale: float | None = None,
    loss_batch_size: int = DEFAULT_LOSS_BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> RetrievalResult:
    """Image-to-text and text-to-image retrieval metrics for paired embeddings.

    Row ``i`` of `image_emb` and of `text_emb` is one pair. Both are
    L2-normalised here.

    Without groups this is the reference (docs/REFERENCE.md, Retrieval): duplicates are
    competitors. With ``image_groups`` (rows showing the same image, e.g.
    ``duplicate_groups(paths)`` or a group-by column) and/or
    ``text_groups`` (identical captions) every caption of the same image counts
    as a hit, CLIP_benchmark style; see the module docstring for the exact rule.

    ``logit_scale`` is the model's *multiplier* (``logit_scale.exp()``, e.g.
    100), used only for ``clip_val_loss`` over batches of ``loss_batch_size``
    rows in row order (the reference's loss, computed per row whatever the
    groups). Returns a :class:`RetrievalResult`.
    """
    ks = _check_ks(ks)
    chunk = _check_chunk_size(chunk_size)
    dev = _resolve_device(device)
    I = _as_embeddings(image_emb, "image embeddings")
    T = _as_embeddings(text_emb, "text embeddings")
    _check_pair_count(I.shape[0], T.shape[0])
    _check_same_dim(I, T, "image embeddings", "text embeddings")
    n = I.shape[0]

    I, T, i_norms, t_norms, dtype = _on_device(I, T, ("image embeddings", "text embeddings"), dev, chunk)

    rows = np.arange(n, dtype=np.int64)
    if image_groups is None and text_groups is None:
        img_q = txt_q = rows
        groups = None
        img_rep = txt_rep = rows
        lab_img = lab_txt = rows
    else:
        img_q = rows if image_groups is None else duplicate_groups(_labels_1d(image_groups, n, "image_groups"))
        txt_q = rows if text_groups is None else duplicate_groups(_labels_1d(text_groups, n, "text_groups"))
        groups = _row_groups(img_q, txt_q)
        # First row of each distinct image / caption (ids are in first-occurrence order).
        img_rep = np.unique(img_q, return_index=True)[1]
        txt_rep = np.unique(txt_q, return_index=True)[1]
        lab_img, lab_txt = groups[img_rep], groups[txt_rep]

    with torch.inference_mode():
        r_i2t = _rank_core(I, T, i_norms, t_norms, img_rep, txt_rep, lab_img, lab_txt, chunk, dtype)
        r_t2i = _rank_core(T, I, t_norms, i_norms, txt_rep, img_rep, lab_txt, lab_img, chunk, dtype)

    metrics = _both_directions(r_i2t, r_t2i, ks)
    if logit_scale is not None:
        metrics["clip_val_loss"] = _clip_loss(I, T, i_norms, t_norms, logit_scale, loss_batch_size, dtype)
    metrics["num_samples"] = n
    metrics["num_images"] = len(r_i2t)
    metrics["num_texts"] = len(r_t2i)
    return RetrievalResult(metrics, r_i2t, r_t2i, img_q, txt_q, groups)


# --------------------------------------------------------------------------- bootstrap


def bootstrap_retrieval_ci(
    ranks_i2t: Any,
    ranks_t2i: Any,
    ks: Sequence[int] = DEFAULT_KS,
    n_resamples: int = 1000,
    seed: int | None = 42,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap 95% CIs of every rank metric, resampling queries.

    Replicate ``b`` uses ``RandomState(seed).choice(n, n)``, drawn one replicate
    after another (the DermFM-Zero bootstrap scheme, on a private RNG). When both
    directions have the same number of queries (no groups: one per pair) the
    same draw resamples the *pairs* for both directions, so ``mean_recall`` keeps
    their correlation. In group mode the counts differ, and each replicate draws
    the image queries first, then the caption queries.

    Returns ``{metric: {"value", "mean", "ci_low", "ci_high", "n_resamples"}}``
    for every key of :func:`rank_metrics` in both directions plus
    ``mean_recall``: the point estimate on all queries, the mean of the
    replicates, and their 2.5th / 97.5th percentiles.
    """
    ks = _check_ks(ks)
    r1 = np.asarray(ranks_i2t)
    r2 = np.asarray(ranks_t2i)
    for r, name in ((r1, "ranks_i2t"), (r2, "ranks_t2i")):
        if r.ndim != 1 or len(r) == 0:
            raise DataError(f"{name} must be a non-empty 1-D array, got shape {r.shape}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")

    point = _both_directions(r1, r2, ks)
    names = list(point)
    samples = np.empty((int(n_resamples), len(names)), dtype=np.float64)
    rs = np.random.RandomState(seed)
    paired = len(r1) == len(r2)
    for b in range(int(n_resamples)):
        idx1 = rs.choice(len(r1), len(r1))
        idx2 = idx1 if paired else rs.choice(len(r2), len(r2))
        rep = _both_directions(r1[idx1], r2[idx2], ks)
        samples[b] = [rep[k] for k in names]
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return {
        name: {
            "value": point[name],
            "mean": float(samples[:, j].mean()),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
            "n_resamples": int(n_resamples),
        }
        for j, name in enumerate(names)
    }
