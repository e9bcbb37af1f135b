"""The metric registry: every metric a task can report, by name.

A task lists the metrics it reports by name; :func:`classification_metrics`, :func:`bootstrap_ci`, the
subgroup and comparison analyses all resolve those names here and compute them with the weighted engine
(:mod:`panderm.metrics.engine`), so a point estimate, a bootstrap replicate and a subgroup use one definition.

Built-in names are :data:`METRIC_NAMES` plus ``top<k>_accuracy`` for any k >= 1. :func:`register_metric` adds a
user metric: a plain function of one sample set, which the engine calls once per weight row (the bootstrap
replicates, the subgroups) on the rows that row selects. Tasks append the user metrics to their own lists
through :func:`reported_metrics`, so a registered metric shows up in their results without further wiring.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from panderm.errors import DataError

from .engine import _aupr_w, _auroc_w, _confusion, _Counts, _safe_div, _topk_hits

__all__ = [
    "METRIC_NAMES",
    "REFERENCE_BOOTSTRAP_METRICS",
    "MetricFn",
    "register_metric",
    "unregister_metric",
    "metric_names",
    "is_metric",
    "reported_metrics",
]

#: The built-in names `classification_metrics` understands (plus ``top<k>_accuracy``), in default order.
METRIC_NAMES = (
    "accuracy",
    "balanced_accuracy",
    "weighted_f1",
    "macro_f1",
    "top3_accuracy",
    "auroc",
    "aupr",
    "kappa",
    "sensitivity",
    "specificity",
)

#: The seven metrics of the DermFM-Zero ``bootstrap_ci.py`` tables, in its column order.
REFERENCE_BOOTSTRAP_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "sensitivity",
    "specificity",
    "auroc",
)

_TOPK_RE = re.compile(r"^top(\d+)_accuracy$")

#: A user metric: ``fn(y_true, probs, y_pred) -> float`` on one sample set (int64 labels 0..K-1, float64
#: [N, K] scores, int64 predictions); nan where it is undefined.
MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


class _Rows:
    """One engine call: the data, the weight rows ``W`` [B, N] and the per-row confusion counts, built on
    first use (score-only metrics never need them)."""

    def __init__(self, y: np.ndarray, probs: np.ndarray | None, pred: np.ndarray, W: np.ndarray,
                 multi_class: str = "ovr", strict: bool = False, k: int | None = None) -> None:
        self.y, self.probs, self.pred, self.W = y, probs, pred, W
        self.k = probs.shape[1] if probs is not None else int(k)  # no scores: a label-only metric
        self.multi_class, self.strict = multi_class, strict

    @cached_property
    def counts(self) -> _Counts:
        return _Counts(_confusion(self.y, self.pred, self.k, self.W))


def _auroc_rows(r: _Rows) -> np.ndarray:
    val = _auroc_w(r.y, r.probs, r.W, r.multi_class)
    if r.strict and r.k > 2:
        # sklearn's multi-class roc_auc_score raises unless every one of the K classes occurs in y_true; the
        # reference stores 0.0 then.
        val = np.where((r.counts.support > 0).all(1), val, np.nan)
    return val


def _topk_rows(kk: int) -> Callable[[_Rows], np.ndarray]:
    def rows(r: _Rows) -> np.ndarray:
        if kk >= r.k:
            return np.ones(r.W.shape[0])
        return _safe_div(r.W @ _topk_hits(r.y, r.probs, kk).astype(float), r.W.sum(1))
    return rows


# One entry per built-in name: how the engine computes it for every weight row.
_BUILTIN: dict[str, Callable[[_Rows], np.ndarray]] = {
    "accuracy": lambda r: r.counts.accuracy(),
    "balanced_accuracy": lambda r: r.counts.balanced_accuracy(),
    "weighted_f1": lambda r: r.counts.weighted_f1(),
    "macro_f1": lambda r: r.counts.macro_f1(),
    "top3_accuracy": _topk_rows(3),
    "auroc": _auroc_rows,
    "aupr": lambda r: _aupr_w(r.y, r.probs, r.W),
    "kappa": lambda r: r.counts.kappa(),
    "sensitivity": lambda r: r.counts.sensitivity(r.strict),
    "specificity": lambda r: r.counts.specificity(r.strict),
}
assert tuple(_BUILTIN) == METRIC_NAMES


@dataclass(frozen=True)
class _UserMetric:
    fn: MetricFn
    report: bool

    def rows(self, r: _Rows) -> np.ndarray:
        out = np.empty(r.W.shape[0])
        index = np.arange(len(r.y))
        for b, w in enumerate(r.W):
            counts = w.astype(np.int64)
            if not np.array_equal(counts, w):
                raise DataError("a registered metric needs whole-number sample weights (resample counts, masks)")
            take = np.repeat(index, counts)  # the sample set this row stands for
            out[b] = float(self.fn(r.y[take], r.probs[take], r.pred[take])) if take.size else np.nan
        return out


_USER: dict[str, _UserMetric] = {}


def register_metric(name: str, fn: MetricFn, *, report: bool = True) -> None:
    """Add a metric every task can report by ``name``.

    ``fn(y_true, probs, y_pred) -> float`` sees one sample set: int64 labels ``0..K-1``, the float64 [N, K]
    scores and the int64 predicted labels (the task's own, else the argmax); return nan where it is undefined.
    Bootstrap replicates and subgroups call it once each on the samples they hold. With ``report`` (default)
    the metric joins the default list (``metrics=None``) and every task's list (:func:`reported_metrics`).
    Registering a user name again replaces it; a built-in name cannot be replaced.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"metric name must be an identifier-like string, got {name!r}")
    if name in _BUILTIN or _TOPK_RE.match(name):
        raise ValueError(f"{name!r} is a built-in metric and cannot be replaced")
    if not callable(fn):
        raise TypeError(f"metric {name!r}: fn must be callable, got {type(fn).__name__}")
    _USER[name] = _UserMetric(fn, bool(report))


def unregister_metric(name: str) -> None:
    """Remove a metric added with :func:`register_metric` (built-ins stay)."""
    if name not in _USER:
        raise KeyError(f"{name!r} is not a registered user metric")
    del _USER[name]


def metric_names() -> tuple[str, ...]:
    """Every known name: the built-ins, then the user metrics in registration order."""
    return METRIC_NAMES + tuple(_USER)


def is_metric(name: object) -> bool:
    """Whether ``name`` is a registered metric or a ``top<k>_accuracy`` with k >= 1."""
    if not isinstance(name, str):
        return False
    if name in _BUILTIN or name in _USER:
        return True
    t = _TOPK_RE.match(name)
    return t is not None and int(t.group(1)) >= 1


def reported_metrics(base: Sequence[str]) -> tuple[str, ...]:
    """A task's metric list ``base`` followed by the user metrics registered with ``report=True``."""
    return tuple(base) + tuple(n for n, m in _USER.items() if m.report and n not in base)


def _resolve_metrics(metrics: Sequence[str] | str | None, k: int) -> list[str]:
    if metrics is None:
        return list(reported_metrics([m for m in METRIC_NAMES if m != "top3_accuracy" or k > 3]))
    if isinstance(metrics, str):
        metrics = [metrics]
    names: list[str] = []
    for m in metrics:
        if not is_metric(m):
            raise DataError(
                f"unknown metric {m!r}; known: {', '.join(metric_names())} (or top<k>_accuracy)"
            )
        if m not in names:
            names.append(m)
    if not names:
        raise DataError("metrics is empty: name at least one metric")
    return names


def _rows_fn(name: str) -> Callable[[_Rows], np.ndarray]:
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name in _USER:
        return _USER[name].rows
    return _topk_rows(int(_TOPK_RE.match(name).group(1)))


def _compute(
    names: list[str],
    y: np.ndarray,
    probs: np.ndarray,
    pred: np.ndarray,
    W: np.ndarray,
    multi_class: str,
    strict: bool = False,
) -> dict[str, np.ndarray]:
    """Named metrics for each row of W. ``strict`` applies the reference's
    per-class 0.0 rules (sensitivity/specificity) and its AUROC failures."""
    rows = _Rows(y, probs, pred, W, multi_class, strict)
    out = {name: _rows_fn(name)(rows) for name in names}
    if strict:
        out = {n: np.nan_to_num(v, nan=0.0) for n, v in out.items()}
        if rows.k == 2:
            # The reference unpacks a 2x2 confusion matrix; with a single label in
            # the replicate it is 1x1, the unpacking fails and both become 0.0.
            counts = rows.counts
            single = ((counts.support + counts.predicted) > 0).sum(1) < 2
            for n in ("sensitivity", "specificity"):
                if n in out:
                    out[n] = np.where(single, 0.0, out[n])
    return out


def _one(values: np.ndarray) -> float:
    return float(values[0])
