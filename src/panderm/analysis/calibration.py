"""Calibration of a classifier's probabilities: ECE, class-wise ECE, Brier, NLL, reliability diagram, temperature.

Every function takes integer labels ``y`` (0..K-1) and a probability matrix ``probs`` [N, K] whose rows sum
to 1 — exactly what every panderm classification task writes (docs/OUTPUTS.md) — so zero-shot, linear-probe,
finetuning and multimodal runs are measured alike. Formulas: docs/ANALYSIS.md, section "Calibration".

Bin conventions (shared by the metrics, :func:`reliability_bins` and the diagram):

- **equal width** (``strategy="uniform"``): edges ``b/n_bins`` for b = 0..n_bins; bins are right-closed
  ``(lo, hi]`` and the first bin also holds 0, i.e. ``[0, 1/n_bins]``. A confidence of exactly 0.2 with
  5 bins falls in the first bin ``[0, 0.2]``, not the second.
- **equal mass** (``strategy="quantile"``): the samples sorted by confidence (stable sort, so tied
  confidences keep their input order) are cut into ``n_bins`` consecutive groups whose sizes differ by at
  most one (the first ``N mod n_bins`` groups hold one more). A bin's lower/upper are its smallest and
  largest confidence. With fewer samples than bins the last bins are empty.

Empty bins contribute nothing to an ECE (their weight is 0).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import DataError
from ..metrics import _as_probs, _labels_and_probs
from ..validation import PROBABILITY_ROW_TOL, check_probability_rows

__all__ = [
    "calibration_metrics",
    "reliability_bins",
    "reliability_figure",
    "fit_temperature",
    "apply_temperature",
    "temperature_report",
    "NLL_CLIP",
    "ROW_SUM_TOL",
]

# p_y is floored here before the log so one confidently wrong sample costs -log(1e-12) ~ 27.6 nats, not inf.
NLL_CLIP = 1e-12
# How far a probability row may miss a sum of 1 (the tolerance lives with the check, in panderm.validation).
ROW_SUM_TOL = PROBABILITY_ROW_TOL
# Search range of the temperature: beyond it the probabilities are effectively one-hot or uniform.
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))
_STRATEGIES = ("uniform", "quantile")


# --------------------------------------------------------------------------- #
# Input checks
# --------------------------------------------------------------------------- #
def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)):
        raise DataError(f"n_bins must be a whole number of bins, got {n_bins!r}", param="calibration_bins")
    if n_bins < 1:
        raise DataError(f"n_bins must be at least 1, got {n_bins}", param="calibration_bins")
    return int(n_bins)


def _checked(y: Any, probs: Any, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities, or DataError: finite, within [0, 1], rows summing to 1, labels in 0..K-1."""
    prefix = f"{what}: " if what else ""
    try:
        y, p = _labels_and_probs(y, probs)
    except DataError as exc:
        raise DataError(f"{prefix}{exc}") from None
    return y, check_probability_rows(p, prefix)


def _checked_probs(probs: Any) -> np.ndarray:
    return check_probability_rows(_as_probs(probs), "")


# --------------------------------------------------------------------------- #
# Binning
# --------------------------------------------------------------------------- #
def _uniform_bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each value in [0, 1] under right-closed equal-width bins, the first one closed at 0."""
    edges = np.arange(n_bins + 1) / n_bins  # b/n exactly rounded, so 0.7 meets edge 7/10 exactly
    # side="left": the first edge >= v is the bin's upper edge, which makes bins right-closed.
    return np.clip(np.searchsorted(edges, values, side="left") - 1, 0, n_bins - 1)


def _quantile_groups(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    order = np.argsort(values, kind="stable")
    return np.array_split(order, n_bins)


def _binned_gap(values: np.ndarray, hits: np.ndarray, n_bins: int) -> float:
    """sum_b (n_b / N) |mean(hits in b) - mean(values in b)| over equal-width bins."""
    idx = _uniform_bin_index(values, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_v = np.bincount(idx, weights=values, minlength=n_bins)
    sum_h = np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins)
    # |sum_h - sum_v| / N is n_b/N * |acc_b - conf_b| without dividing by empty bins.
    return float(np.abs(sum_h - sum_v).sum() / len(values))


def _confidence_and_hits(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.argmax(p, axis=1)  # first column on ties, like panderm.metrics.probs_to_pred
    return p.max(axis=1), (pred == y)


def _ece_equal_mass(conf: np.ndarray, hits: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for g in _quantile_groups(conf, n_bins):
        if len(g):
            total += abs(hits[g].sum() - conf[g].sum())
    return float(total / len(conf))


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def _nll(y: np.ndarray, p: np.ndarray) -> float:
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], NLL_CLIP)).mean())


# --------------------------------------------------------------------------- #
# Public: metrics, bins, figure
# --------------------------------------------------------------------------- #
def calibration_metrics(y, probs, n_bins: int = 15) -> dict:
    """ECE (equal width and equal mass), class-wise ECE, Brier score and NLL of `probs` against labels `y`.

    - ``ece``: the top-1 confidence ``c_i = max_k p_ik`` and hit ``a_i = 1[argmax_k p_ik == y_i]`` (first
      column on ties) binned into `n_bins` equal-width bins (right-closed ``(lo, hi]``, the first bin
      ``[0, 1/n_bins]``); ``sum_b (n_b/N) |mean_b(a) - mean_b(c)|``.
    - ``ece_equal_mass``: the same sum over `n_bins` equal-count bins of the sorted confidences (module
      docstring).
    - ``classwise_ece``: for every class k = 0..K-1 (also classes absent from `y`), the equal-width ECE of
      ``p_ik`` against ``1[y_i == k]``; then the mean over the K classes.
    - ``brier``: ``mean_i sum_k (p_ik - 1[y_i == k])^2`` — the original multi-class definition of Brier
      (1950), in [0, 2]. For K = 2 it is twice scikit-learn's binary ``brier_score_loss(y, p_i1)``
      (``(p_0 - (1-y))^2 = (p_1 - y)^2`` when ``p_0 = 1 - p_1``), which is in [0, 1].
    - ``nll``: ``mean_i -log max(p_iy, 1e-12)`` in nats; the clip keeps a zero probability on the true
      class finite (27.6 nats) instead of inf.

    Returns floats and ``n_bins``. Raises DataError for NaN/inf, negative probabilities, rows not summing
    to 1 (within 1e-3), labels outside 0..K-1, n_bins < 1.
    """
    n_bins = _check_n_bins(n_bins)
    y, p = _checked(y, probs)
    conf, hits = _confidence_and_hits(y, p)
    k = p.shape[1]
    classwise = np.mean([_binned_gap(p[:, c], y == c, n_bins) for c in range(k)])
    return {
        "ece": _binned_gap(conf, hits, n_bins),
        "ece_equal_mass": _ece_equal_mass(conf, hits, n_bins),
        "classwise_ece": float(classwise),
        "brier": _brier(y, p),
        "nll": _nll(y, p),
        "n_bins": n_bins,
    }


def reliability_bins(y, probs, n_bins: int = 15, strategy: str = "uniform"):
    """One row per bin of the top-1 confidence: ``bin, lower, upper, count, confidence, accuracy, gap``.

    ``uniform``: lower/upper are the bin edges ``b/n_bins`` (right-closed, first bin includes 0).
    ``quantile``: equal-count bins; lower/upper are the smallest and largest confidence in the bin.
    ``confidence`` and ``accuracy`` are the bin's mean confidence and fraction of correct top-1 predictions,
    ``gap = accuracy - confidence`` (negative: over-confident); all NaN for an empty bin. Always `n_bins`
    rows; ``sum(count * |gap|) / N`` is the matching ECE.
    """
    import pandas as pd

    n_bins = _check_n_bins(n_bins)
    if strategy not in _STRATEGIES:
        raise DataError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    y, p = _checked(y, probs)
    conf, hits = _confidence_and_hits(y, p)
    if strategy == "uniform":
        idx = _uniform_bin_index(conf, n_bins)
        groups = [np.flatnonzero(idx == b) for b in range(n_bins)]
        edges = np.arange(n_bins + 1) / n_bins
        bounds = [(edges[b], edges[b + 1]) for b in range(n_bins)]
    else:
        groups = _quantile_groups(conf, n_bins)
        bounds = [(conf[g].min(), conf[g].max()) if len(g) else (np.nan, np.nan) for g in groups]
    rows = []
    for b, (g, (lo, hi)) in enumerate(zip(groups, bounds)):
        n = len(g)
        c = float(conf[g].mean()) if n else np.nan
        a = float(hits[g].mean()) if n else np.nan
        rows.append({"bin": b, "lower": float(lo), "upper": float(hi), "count": n,
                     "confidence": c, "accuracy": a, "gap": a - c})
    return pd.DataFrame(rows, columns=["bin", "lower", "upper", "count", "confidence", "accuracy", "gap"])


def reliability_figure(y, probs, n_bins: int = 15, title: str | None = None):
    """Reliability diagram: accuracy per equal-width confidence bin against the diagonal, and below it the
    histogram of top-1 confidences. The title carries the ECE. Returns a ``matplotlib.figure.Figure``
    (not attached to pyplot; save it with ``panderm.report.save_figure``)."""
    from matplotlib.figure import Figure

    n_bins = _check_n_bins(n_bins)
    y, p = _checked(y, probs)
    bins = reliability_bins(y, p, n_bins, "uniform")
    ece = calibration_metrics(y, p, n_bins)["ece"]
    acc_overall = float(np.mean(np.argmax(p, axis=1) == y))

    fig = Figure(figsize=(5.0, 6.0), layout="constrained")  # laid out when saved, not here
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    centers = (bins["lower"] + bins["upper"]) / 2
    filled = bins["count"] > 0
    top.bar(centers[filled], bins["accuracy"][filled], width=width, edgecolor="black", color="#4c72b0",
            label="accuracy")
    # The shaded part between the bar and the bin's mean confidence is the bin's contribution to the ECE.
    top.bar(centers[filled], bins["confidence"][filled] - bins["accuracy"][filled],
            bottom=bins["accuracy"][filled], width=width, color="#dd8452", alpha=0.35, edgecolor="#dd8452",
            hatch="//", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    head = f"{title}\n" if title else ""
    top.set_title(f"{head}ECE {ece:.4f} ({n_bins} bins), accuracy {acc_overall:.3f}, n={len(y)}", fontsize=10)

    bottom.bar(centers, bins["count"], width=width, edgecolor="black", color="#8c8c8c")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("count")
    return fig


# --------------------------------------------------------------------------- #
# Temperature scaling
# --------------------------------------------------------------------------- #
def _check_temperature(T: Any) -> float:
    try:
        t = float(T)
    except (TypeError, ValueError):
        raise DataError(f"temperature must be a number, got {T!r}") from None
    if not np.isfinite(t) or t <= 0:
        raise DataError(f"temperature must be a finite number > 0, got {T!r}")
    return t


def _log_probs(p: np.ndarray) -> np.ndarray:
    # log p are the logits up to a per-row constant, which softmax ignores; the clip keeps zeros finite.
    return np.log(np.maximum(p, NLL_CLIP))


def _softmax_t(z: np.ndarray, t: float) -> np.ndarray:
    s = z / t
    s = s - s.max(axis=1, keepdims=True)  # the largest exponent is 0: no overflow for small T
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(probs, T: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row-wise: T > 1 softens, T < 1 sharpens; the arg-max never changes.

    ``p`` is clipped at 1e-12 before the log (a zero probability becomes ``1e-12**(1/T)`` before
    renormalising). ``T == 1`` returns the probabilities unchanged (as float64), so "no scaling" is
    exactly the identity.
    """
    t = _check_temperature(T)
    p = _checked_probs(probs)
    if t == 1.0:
        return p.copy()
    return _softmax_t(_log_probs(p), t)


def fit_temperature(y_val, probs_val) -> float:
    """The temperature T > 0 that minimises the validation NLL of ``softmax(log(p) / T)``.

    Bounded 1-D search on log T in [log 0.01, log 100]. The NLL is convex in 1/T, hence unimodal in log T,
    so the bounded Brent search finds its minimum. Returns 1.0 unless the fitted T gives a strictly lower
    validation NLL (as :func:`calibration_metrics` measures it) than the probabilities as given, so the
    scaling never makes the validation NLL worse.
    """
    from scipy.optimize import minimize_scalar

    y, p = _checked(y_val, probs_val, "validation")
    z = _log_probs(p)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        m = s.max(axis=1)
        lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
        return float((lse - s[rows, y]).mean())

    res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    if not np.isfinite(t) or _nll(y, apply_temperature(p, t)) >= _nll(y, p):
        return 1.0
    return t


def temperature_report(y_val, probs_val, y_test, probs_test, n_bins: int = 15,
                       metric_fn: Callable[[np.ndarray, np.ndarray], dict] | None = None) -> dict:
    """Fit T on the validation split, apply it to both splits, and measure calibration before and after.

    Returns ``{"temperature": T, "val": {"before": m, "after": m}, "test": {"before": m, "after": m}}``
    where each ``m`` is :func:`calibration_metrics`; with `metric_fn` (``f(y, probs) -> dict``, e.g.
    ``panderm.metrics.classification_metrics``) its entries are added to each ``m`` (the calibration keys
    win on a name clash).
    """
    n_bins = _check_n_bins(n_bins)
    yv, pv = _checked(y_val, probs_val, "validation")
    yt, pt = _checked(y_test, probs_test, "test")
    if pv.shape[1] != pt.shape[1]:
        raise DataError(f"validation probs have {pv.shape[1]} classes but test probs have {pt.shape[1]}")
    t = fit_temperature(yv, pv)

    def measure(y: np.ndarray, p: np.ndarray) -> dict:
        m = calibration_metrics(y, p, n_bins)
        if metric_fn is not None:
            m = {**metric_fn(y, p), **m}
        return m

    out: dict = {"temperature": t}
    for name, (y, p) in {"val": (yv, pv), "test": (yt, pt)}.items():
        out[name] = {"before": measure(y, p), "after": measure(y, apply_temperature(p, t))}
    return out
