"""Bootstrap confidence intervals, resampled exactly like the DermFM-Zero ``bootstrap_ci.py`` script.

Replicates go through the weighted engine as rows of sample counts, chunked so memory stays flat
(docs/REFERENCE.md, Metrics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from panderm.errors import DataError

from .engine import _confusion
from .registry import _compute, _one, _resolve_metrics
from .scores import _prepare


# Upper bound on the number of float64 cells one bootstrap chunk may hold in a
# [replicates, samples] or [replicates, K*K] array (~16 MB); keeps memory flat for
# large test sets or K=134 while still vectorising 1000 x 2000 in one go.
_CHUNK_CELLS = 2_000_000


def bootstrap_indices(n: int, n_resamples: int = 1000, seed: int | None = 42) -> np.ndarray:
    """The [n_resamples, n] index matrix of the DermFM-Zero bootstrap script.

    Identical to ``np.random.seed(seed); [np.random.choice(n, n) for _ in
    range(n_resamples)]`` but drawn from a private ``RandomState`` so the
    caller's global NumPy RNG is left untouched.
    """
    if n < 1:
        raise DataError(f"cannot resample {n} samples")
    rs = np.random.RandomState(seed)
    out = np.empty((n_resamples, n), dtype=np.int64)
    for b in range(n_resamples):  # one call per replicate: the reference's draw order
        out[b] = rs.choice(n, n)
    return out


def bootstrap_ci(
    y_true: Any,
    probs: Any,
    metrics: Sequence[str] | None = None,
    n_resamples: int = 1000,
    seed: int | None = 42,
    multi_class: str = "ovr",
    floor_zero: bool = False,
    undefined_as_zero: bool = False,
    *,
    y_pred: Any = None,
    return_samples: bool = False,
) -> dict[str, dict[str, Any]]:
    """Percentile bootstrap 95% CIs, resampled like DermFM-Zero ``bootstrap_ci.py``.

    Resampling is i.i.d. (no stratification): replicate ``b`` is the ``b``-th
    ``np.random.choice(n, n)`` after ``np.random.seed(seed)``
    (see :func:`bootstrap_indices`; the global RNG is not touched). The zero-shot
    script reseeds with 42 for every (dataset, model), so models on one dataset
    see the same resamples. Metrics, ``multi_class`` and ``y_pred`` are as in
    :func:`classification_metrics`; the seven reference columns are
    :data:`REFERENCE_BOOTSTRAP_METRICS`.

    Returns ``{name: {"value", "mean", "ci_low", "ci_high", "n_resamples"}}``:
    the point estimate on the full data, the mean of the replicate values (what
    the reference reports), their 2.5th/97.5th percentiles (linear interpolation),
    and the number of replicates used. With ``return_samples`` each entry also
    holds ``"samples"``, the used replicate values in draw order.

    Undefined replicates (e.g. AUROC with one class, sensitivity without
    positives) are skipped for that metric. The reference instead stores 0.0
    there; ``undefined_as_zero=True`` reproduces its quirks: undefined -> 0.0,
    per-class 0.0 inside multi-class sensitivity/specificity, multi-class AUROC
    0.0 unless all K classes occur (sklearn raises), binary sensitivity and
    specificity 0.0 when the replicate holds a single label, and a multi-class
    replicate whose labels (true or predicted) miss a class of the full
    ``y_true`` is dropped for all metrics (its IndexError). Exact reproduction
    assumes every class occurs in the full ``y_true``.

    ``floor_zero`` applies the zero-shot script's hack: a lower bound exactly 0.0
    with a positive mean becomes ``max(0.1 * mean, 1e-6)``.

    The reference's AUROC 0.0 for a one-class binary replicate comes from
    sklearn versions that raised there; sklearn 1.9 returns nan instead, which
    would make the reference's mean nan. Multi-class scores that do not sum to 1
    also make sklearn raise (0.0 in the reference); that is not reproduced.

    Speed (vectorised over replicates, one CPU core): 1000 resamples of N=2000,
    K=7 take about 0.3 s for the seven reference metrics and 0.9 s for all ten;
    K=134, N=1500, all metrics about 6 s.
    """
    y, p, pred = _prepare(y_true, probs, y_pred, multi_class)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) \
            or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    n, k = p.shape
    names = _resolve_metrics(metrics, k)
    point = _compute(names, y, p, pred, np.ones((1, n)), multi_class)

    idx = bootstrap_indices(n, int(n_resamples), seed)
    n_full_classes = len(np.unique(y))
    samples = {name: np.empty(n_resamples) for name in names}
    keep = np.ones(n_resamples, dtype=bool)
    chunk = max(1, _CHUNK_CELLS // max(n, k * k))
    for start in range(0, n_resamples, chunk):
        part = idx[start:start + chunk]
        b = part.shape[0]
        # Multiplicity of every sample in every replicate of the chunk.
        W = np.bincount(
            (part + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n
        ).reshape(b, n).astype(np.float64)
        vals = _compute(names, y, p, pred, W, multi_class, strict=undefined_as_zero)
        for name in names:
            samples[name][start:start + b] = vals[name]
        if undefined_as_zero and k > 2:
            C = _confusion(y, pred, k, W)
            seen = ((C.sum(1) + C.sum(2)) > 0).sum(1)
            keep[start:start + b] = seen >= n_full_classes

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        vals = samples[name][keep]
        vals = vals[~np.isnan(vals)]
        if vals.size:
            mean = float(vals.mean())
            lo, hi = (float(v) for v in np.percentile(vals, [2.5, 97.5]))
        else:
            mean = lo = hi = math.nan
        if floor_zero and lo == 0.0 and mean > 0.0:
            lo = max(0.1 * mean, 1e-6)
        entry: dict[str, Any] = {
            "value": _one(point[name]),
            "mean": mean,
            "ci_low": lo,
            "ci_high": hi,
            "n_resamples": int(vals.size),
        }
        if return_samples:
            entry["samples"] = vals
        out[name] = entry
    return out


def format_ci(entry: dict[str, Any], center: str = "mean") -> str:
    """``"0.7958 (0.7758-0.8150)"``: the reference summary cell, 4 decimals.

    ``center`` picks the leading number: ``"mean"`` (bootstrap mean, as the
    reference) or ``"value"`` (point estimate). ``"n/a"`` when it is undefined.
    """
    c = entry[center]
    if c is None or (isinstance(c, float) and math.isnan(c)):
        return "n/a"
    return f"{c:.4f} ({entry['ci_low']:.4f}-{entry['ci_high']:.4f})"
