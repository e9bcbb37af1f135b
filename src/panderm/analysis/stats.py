"""Paired significance tests for two models scored on the same images: paired bootstrap, DeLong, Holm.

* :func:`paired_bootstrap` — the difference of any registry metric between two models, with a percentile CI
  and a two-sided p-value from resampling the *same* images for both models (the resamples of
  :func:`panderm.metrics.bootstrap_indices`, i.e. the DermFM-Zero bootstrap draws).
* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (1988): the difference of two correlated binary AUROCs
  and its variance from the structural components (placement values) of each model.
  :func:`delong_multiclass` extends it to K classes as one-vs-rest per class, Holm over the classes.
* :func:`holm` — Holm-Bonferroni step-down adjusted p-values.

Metric values come from :mod:`panderm.metrics` (one definition each); nothing here redefines a metric.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import metrics as M
from ..errors import DataError
from ..validation import binary_labels_and_scores

__all__ = ["paired_bootstrap", "delong_test", "delong_multiclass", "holm", "placement_values"]


# --------------------------------------------------------------------------- #
# Holm
# --------------------------------------------------------------------------- #
def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` (step-down, so the adjusted values are monotone in the raw
    ones). Reject H_(i) at level alpha when its adjusted p <= alpha: this controls the family-wise error rate
    for any dependence between the tests. NaN entries (untestable hypotheses) stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise DataError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][0]}")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


# --------------------------------------------------------------------------- #
# Paired bootstrap
# --------------------------------------------------------------------------- #
def _bootstrap_p(d: np.ndarray) -> float:
    b = d.size
    below = (1 + int(np.count_nonzero(d <= 0))) / (b + 1)
    above = (1 + int(np.count_nonzero(d >= 0))) / (b + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def paired_bootstrap(y: Any, probs_a: Any, probs_b: Any, metric: str, n_resamples: int = 1000, seed: int | None = 42,
                     multi_class: str = "ovr", return_samples: bool = False) -> dict:
    """Paired bootstrap of ``metric(model A) - metric(model B)`` on the same images.

    Replicate ``b`` draws the image indices ``bootstrap_indices(N, n_resamples, seed)[b]`` (N draws with
    replacement) and evaluates BOTH models on exactly those images, so the spread of the difference reflects
    the images, not two independent draws. Metric values are :func:`panderm.metrics.classification_metrics`'s
    (label metrics on the arg-max of each model's probabilities; ``multi_class`` for AUROC); the replicates run
    through the same weighted engine as :func:`panderm.metrics.bootstrap_ci`, which gives the same numbers as
    calling ``classification_metrics`` on the resampled rows.

    Returns ``{metric, a, b, diff, ci_low, ci_high, p_value, n_resamples}``:

    - ``a``, ``b``: the metric of each model on the full set; ``diff = a - b``;
    - ``ci_low``, ``ci_high``: the 2.5th / 97.5th percentiles (linear interpolation) of the replicate
      differences ``d_b = metric_A(b) - metric_B(b)`` (a 95% percentile CI);
    - ``p_value``: two-sided, ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` with the add-one estimates
      ``P(d <= 0) = (1 + #{b: d_b <= 0}) / (B + 1)`` and ``P(d >= 0) = (1 + #{b: d_b >= 0}) / (B + 1)``
      over the B used replicates. It is (up to the +1) the smallest alpha at which the (1 - alpha) percentile CI
      of the difference excludes 0; it is never 0, and it is 1 when the models agree on every replicate
      (a model compared with itself: diff 0, CI [0, 0], p 1);
    - ``n_resamples``: the replicates used: a replicate where the metric is undefined for either model
      (e.g. AUROC of a resample without positives) is dropped for both.

    ``return_samples`` adds ``samples`` (the used replicate differences, in draw order).
    """
    y_arr, pa, pred_a = M._prepare(y, probs_a, None, multi_class)
    _, pb, pred_b = M._prepare(y, probs_b, None, multi_class)
    if pa.shape != pb.shape:
        raise DataError(f"the two models' probabilities have shapes {pa.shape} and {pb.shape}: "
                        "a paired comparison needs the same images and classes")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise DataError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    names = M._resolve_metrics([metric], pa.shape[1])
    name = names[0]
    a = M.classification_metrics(y_arr, pa, [name], multi_class)[name]
    b = M.classification_metrics(y_arr, pb, [name], multi_class)[name]

    n, k = pa.shape
    idx = M.bootstrap_indices(n, int(n_resamples), seed)
    d = np.empty(int(n_resamples))
    chunk = max(1, M._CHUNK_CELLS // max(n, k * k))
    for start in range(0, int(n_resamples), chunk):
        part = idx[start:start + chunk]
        rows = part.shape[0]
        W = np.bincount((part + (np.arange(rows) * n)[:, None]).ravel(),
                        minlength=rows * n).reshape(rows, n).astype(np.float64)
        va = M._compute(names, y_arr, pa, pred_a, W, multi_class)[name]
        vb = M._compute(names, y_arr, pb, pred_b, W, multi_class)[name]
        d[start:start + rows] = va - vb
    d = d[~np.isnan(d)]
    if d.size:
        lo, hi = (float(v) for v in np.percentile(d, [2.5, 97.5]))
        p = _bootstrap_p(d)
    else:
        lo = hi = p = math.nan
    out = {"metric": name, "a": float(a), "b": float(b), "diff": float(a - b), "ci_low": lo, "ci_high": hi,
           "p_value": p, "n_resamples": int(d.size)}
    if return_samples:
        out["samples"] = d
    return out


# --------------------------------------------------------------------------- #
# DeLong
# --------------------------------------------------------------------------- #
def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def placement_values(scores_pos: np.ndarray, scores_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one model's scores.

    ``V10[i] = mean_j psi(X_i, Y_j)`` over the negatives and ``V01[j] = mean_i psi(X_i, Y_j)`` over the positives,
    with ``psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise`` (the Mann-Whitney kernel). Computed in
    O((m + n) log(m + n)) from mid-ranks (Sun & Xu 2014): ``V10[i] = (R_all(X_i) - R_pos(X_i)) / n`` and
    ``V01[j] = 1 - (R_all(Y_j) - R_neg(Y_j)) / m``.
    """
    x = np.asarray(scores_pos, dtype=np.float64)
    yv = np.asarray(scores_neg, dtype=np.float64)
    m, n = x.size, yv.size
    r_all = _midranks(np.concatenate([x, yv]))
    v10 = (r_all[:m] - _midranks(x)) / n
    v01 = 1.0 - (r_all[m:] - _midranks(yv)) / m
    return v10, v01


def delong_test(y_binary: Any, scores_a: Any, scores_b: Any) -> dict:
    """DeLong's test of AUROC(A) = AUROC(B) for two models scored on the same images (paired).

    With m positives X and n negatives Y, each model's AUROC is the mean of its placement values
    (:func:`placement_values`): ``AUC = mean(V10) = mean(V01)``; it equals ``sklearn.metrics.roc_auc_score``.
    The covariance of the two AUCs is ``S = S10 / m + S01 / n``, where S10 (S01) is the 2x2 sample covariance
    (denominator m - 1, n - 1) of the two models' V10 (V01) vectors. Then

        diff = AUC_A - AUC_B,  var = S_AA + S_BB - 2 S_AB,  z = diff / sqrt(var),  p = 2 (1 - Phi(|z|)).

    Returns ``{auc_a, auc_b, diff, var, z, p_value, n_pos, n_neg}``. Without positives or negatives everything
    is nan; with fewer than 2 of either the variance is undefined (nan). ``var == 0`` (e.g. one model compared
    with itself) gives z = 0, p = 1 when diff is 0.
    """
    pos, sa, sb = binary_labels_and_scores(y_binary, scores_a, scores_b)
    m, n = int(pos.sum()), int((~pos).sum())
    out = {"auc_a": math.nan, "auc_b": math.nan, "diff": math.nan, "var": math.nan, "z": math.nan,
           "p_value": math.nan, "n_pos": m, "n_neg": n}
    if m == 0 or n == 0:
        return out
    v10a, v01a = placement_values(sa[pos], sa[~pos])
    v10b, v01b = placement_values(sb[pos], sb[~pos])
    auc_a, auc_b = float(v10a.mean()), float(v10b.mean())
    diff = auc_a - auc_b
    out.update(auc_a=auc_a, auc_b=auc_b, diff=diff)
    if m < 2 or n < 2:
        return out
    s10 = np.cov(np.vstack([v10a, v10b]), ddof=1)
    s01 = np.cov(np.vstack([v01a, v01b]), ddof=1)
    s = s10 / m + s01 / n
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    var = max(var, 0.0)  # rounding can leave -1e-18 for identical models
    scale = max(abs(s[0, 0]), abs(s[1, 1]), 1e-300)
    if var <= 1e-12 * scale or var == 0.0:
        z = 0.0 if abs(diff) <= 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = math.erfc(abs(z) / math.sqrt(2.0))
    out.update(var=var, z=float(z), p_value=float(min(1.0, p)))
    return out


def delong_multiclass(y: Any, probs_a: Any, probs_b: Any) -> dict:
    """DeLong for K >= 2 classes.

    K == 2: :func:`delong_test` on the class-1 column (binary AUROC, as :func:`panderm.metrics.auroc`).
    K > 2: one-vs-rest per class c (class c positive, every other class negative, scores ``probs[:, c]``),
    DeLong per class, and Holm over the classes present in ``y`` (a class without images is not tested).
    The one p-value of the comparison is the smallest Holm-adjusted one: it rejects "no class's AUROC
    differs" at level alpha with family-wise error alpha. ``auc_a`` / ``auc_b`` / ``diff`` are the macro
    one-vs-rest AUROCs over the tested classes (``metrics.auroc(..., multi_class="ovr")``).

    Returns ``{method, auc_a, auc_b, diff, z, p_value, per_class}``; ``per_class`` lists
    ``{class, auc_a, auc_b, diff, z, p_value, p_holm}`` (K > 2 only; z is the binary z for K == 2, nan else).
    """
    y_arr, pa = M._labels_and_probs(y, probs_a)
    _, pb = M._labels_and_probs(y_arr, probs_b)
    if pa.shape != pb.shape:
        raise DataError(f"the two models' probabilities have shapes {pa.shape} and {pb.shape}")
    k = pa.shape[1]
    if k == 2:
        r = delong_test(y_arr == 1, pa[:, 1], pb[:, 1])
        return {"method": "binary", "auc_a": r["auc_a"], "auc_b": r["auc_b"], "diff": r["diff"], "z": r["z"],
                "p_value": r["p_value"], "per_class": []}
    per = []
    for c in range(k):
        if not (y_arr == c).any() or (y_arr == c).all():
            continue
        r = delong_test(y_arr == c, pa[:, c], pb[:, c])
        per.append({"class": c, "auc_a": r["auc_a"], "auc_b": r["auc_b"], "diff": r["diff"], "z": r["z"],
                    "p_value": r["p_value"]})
    adjusted = holm([r["p_value"] for r in per])
    for r, p in zip(per, adjusted):
        r["p_holm"] = float(p)
    finite = adjusted[~np.isnan(adjusted)]
    auc_a = float(np.mean([r["auc_a"] for r in per])) if per else math.nan
    auc_b = float(np.mean([r["auc_b"] for r in per])) if per else math.nan
    return {"method": f"ovr-holm({len(per)} classes)", "auc_a": auc_a, "auc_b": auc_b, "diff": auc_a - auc_b,
            "z": math.nan, "p_value": float(finite.min()) if finite.size else math.nan, "per_class": per}
