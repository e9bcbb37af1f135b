"""Classification metrics and bootstrap confidence intervals.

Every metric the PanDerm-2 / DermFM-Zero evaluation code reports, with the same
definitions as the scikit-learn calls used there:

* zero-shot (ref-panderm2 §2.5): accuracy ("top-1"), weighted F1, top-3 accuracy,
  AUROC (one-hot macro over the columns, ``multi_class="onehot"``: for K == 2 the
  mean of both columns' AUROCs, which equals binary AUROC on p1 unless scores tie);
* linear probe (ref-panderm2 §4.5): accuracy, balanced accuracy, quadratic kappa,
  weighted F1, AUROC (binary, or OvO macro), macro average precision (AUPR);
* bootstrap CI pipeline (ref-dermfm-zero §4): accuracy, balanced accuracy,
  macro/weighted F1, sensitivity, specificity, AUROC (OvR macro), with 1000
  i.i.d. resamples drawn exactly like the published script.

All metrics are computed from one internal engine that takes a matrix of
per-sample weights ``W[b, i]`` (how often sample ``i`` occurs in replicate ``b``).
A point estimate is the single row ``W = 1``; a bootstrap replicate is the count
vector of its resampled indices. Duplicated rows and integer weights give the
same confusion matrices, ranks and precision/recall curves, so the bootstrap is
vectorised over replicates instead of calling scikit-learn 1000 times, and the
point estimates and the replicates cannot drift apart.

Undefined values (AUROC with one class, sensitivity without positives, ...) are
returned as ``nan`` rather than raised; the bootstrap skips them per metric.

Labels are integers ``0..K-1`` where ``K`` is the number of columns of ``probs``.
Bad input raises :class:`panderm.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from panderm.errors import DataError

__all__ = [
    "METRIC_NAMES",
    "REFERENCE_BOOTSTRAP_METRICS",
    "accuracy",
    "balanced_accuracy",
    "weighted_f1",
    "macro_f1",
    "quadratic_kappa",
    "sensitivity",
    "specificity",
    "top_k_accuracy",
    "auroc",
    "aupr",
    "probs_to_pred",
    "classification_metrics",
    "bootstrap_indices",
    "bootstrap_ci",
    "format_ci",
]

#: Every name `classification_metrics` understands (plus ``top<k>_accuracy``).
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
_MULTI_CLASS = ("ovr", "ovo", "onehot")

# Upper bound on the number of float64 cells one bootstrap chunk may hold in a
# [replicates, samples] or [replicates, K*K] array (~16 MB); keeps memory flat for
# large test sets or K=134 while still vectorising 1000 x 2000 in one go.
_CHUNK_CELLS = 2_000_000


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #
def _as_labels(y: Any, name: str) -> np.ndarray:
    """1-D non-negative int64 labels, or DataError."""
    try:
        arr = np.asarray(y)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{name} cannot be read as an array: {exc}") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D class labels, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name} is empty: need at least one sample")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    else:
        # Floats (e.g. a pandas column that went through NaN) and objects are
        # accepted when every value is a whole number.
        try:
            f = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"{name} must hold integer class labels, got dtype {arr.dtype}"
            ) from None
        bad = ~np.isfinite(f) | (f != np.round(f))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{name} must hold integer class labels, got {arr[i]!r} at position {i}"
            )
        arr = f.astype(np.int64)
    if arr.min() < 0:
        i = int(np.argmin(arr))
        raise DataError(f"{name} has negative label {arr[i]} at position {i}")
    return arr


def _as_probs(probs: Any, n: int | None = None) -> np.ndarray:
    """[N, K] finite float64 scores (K >= 2), or DataError."""
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"probs must be a numeric [N, K] array: {exc}") from None
    if arr.ndim != 2:
        raise DataError(
            f"probs must be a 2-D [N, K] array, got shape {arr.shape} "
            "(for a binary score p use np.column_stack([1 - p, p]))"
        )
    if arr.shape[0] == 0:
        raise DataError("probs is empty: need at least one sample")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"probs has {arr.shape[0]} rows but y_true has {n} labels")
    if arr.shape[1] < 2:
        raise DataError(f"probs must have at least 2 class columns, got {arr.shape[1]}")
    finite = np.isfinite(arr)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DataError(f"probs contains {arr[r, c]} (not finite) at row {r}, column {c}")
    return arr


def _check_range(y: np.ndarray, k: int, name: str, why: str) -> None:
    if y.max() >= k:
        i = int(np.argmax(y))
        raise DataError(
            f"{name} has label {y[i]} at position {i} but {why} K={k} "
            f"(labels must be 0..{k - 1})"
        )


def _labels_and_probs(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true, "y_true")
    p = _as_probs(probs, len(y))
    _check_range(y, p.shape[1], "y_true", "probs has")
    return y, p


def _label_pair(
    y_true: Any, y_pred: Any, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    y = _as_labels(y_true, "y_true")
    yp = _as_labels(y_pred, "y_pred")
    if len(yp) != len(y):
        raise DataError(f"y_pred has {len(yp)} labels but y_true has {len(y)}")
    if num_classes is None:
        k = max(2, int(max(y.max(), yp.max())) + 1)
    else:
        k = int(num_classes)
        if k < 2:
            raise DataError(f"num_classes must be >= 2, got {num_classes}")
        _check_range(y, k, "y_true", "num_classes is")
        _check_range(yp, k, "y_pred", "num_classes is")
    return y, yp, k


def _check_multi_class(multi_class: str) -> None:
    if multi_class not in _MULTI_CLASS:
        raise DataError(f"multi_class must be 'ovr', 'ovo' or 'onehot', got {multi_class!r}")


# --------------------------------------------------------------------------- #
# Weighted engine: every function takes W [B, N] (sample multiplicities) and
# returns one value per row of W, nan where the metric is undefined.
# --------------------------------------------------------------------------- #
def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with nan where den == 0 (no warnings)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the entries where mask is True; nan if none."""
    return _safe_div(np.where(mask, values, 0.0).sum(-1), mask.sum(-1).astype(float))


def _confusion(y: np.ndarray, pred: np.ndarray, k: int, W: np.ndarray) -> np.ndarray:
    """Weighted confusion matrices C[b, true, pred]."""
    b = W.shape[0]
    codes = y * k + pred
    flat = (codes[None, :] + (np.arange(b) * k * k)[:, None]).ravel()
    return np.bincount(flat, weights=W.ravel(), minlength=b * k * k).reshape(b, k, k)


class _Counts:
    """Per-class counts derived once from a stack of confusion matrices."""

    def __init__(self, C: np.ndarray) -> None:
        self.C = C
        self.k = C.shape[1]
        self.tp = np.diagonal(C, axis1=1, axis2=2)
        self.support = C.sum(axis=2)  # true count per class
        self.predicted = C.sum(axis=1)  # predicted count per class
        self.total = self.support.sum(axis=1)
        self.fn = self.support - self.tp
        self.fp = self.predicted - self.tp
        self.tn = self.total[:, None] - self.support - self.fp

    def accuracy(self) -> np.ndarray:
        return _safe_div(self.tp.sum(1), self.total)

    def balanced_accuracy(self) -> np.ndarray:
        # sklearn drops classes without support (they only occur in y_pred).
        recall = _safe_div(self.tp, self.support)
        return _masked_mean(recall, self.support > 0)

    def _f1(self) -> tuple[np.ndarray, np.ndarray]:
        den = 2 * self.tp + self.fp + self.fn
        return _safe_div(2 * self.tp, den), den > 0

    def macro_f1(self) -> np.ndarray:
        # sklearn averages over the union of labels in y_true and y_pred, i.e. the
        # classes with 2tp+fp+fn > 0; a class seen in only one of them scores 0.
        f1, seen = self._f1()
        return _masked_mean(f1, seen)

    def weighted_f1(self) -> np.ndarray:
        f1, seen = self._f1()
        return _safe_div((np.where(seen, f1, 0.0) * self.support).sum(1), self.total)

    def kappa(self) -> np.ndarray:
        # Quadratic weights on the label values 0..K-1 (sklearn with
        # labels=range(K)); sklearn's default re-indexes the labels that occur,
        # which changes the distances when a middle class is absent.
        idx = np.arange(self.k, dtype=float)
        w = (idx[:, None] - idx[None, :]) ** 2
        observed = np.einsum("bij,ij->b", self.C, w)
        expected = np.einsum("bi,ij,bj->b", self.support, w, self.predicted)
        return 1.0 - _safe_div(observed * self.total, expected)

    def sensitivity(self, strict: bool) -> np.ndarray:
        if self.k == 2:
            s = _safe_div(self.tp[:, 1], self.support[:, 1])
            return np.nan_to_num(s, nan=0.0) if strict else s
        recall = _safe_div(self.tp, self.support)
        if strict:  # reference: 0.0 for a class without support, mean over all K
            return np.nan_to_num(recall, nan=0.0).mean(1)
        return _masked_mean(recall, self.support > 0)

    def specificity(self, strict: bool) -> np.ndarray:
        spec = _safe_div(self.tn, self.tn + self.fp)
        if self.k == 2:
            s = spec[:, 1]  # class 1 positive: TN/(TN+FP)
            return np.nan_to_num(s, nan=0.0) if strict else s
        if strict:
            return np.nan_to_num(spec, nan=0.0).mean(1)
        return _masked_mean(spec, ~np.isnan(spec))


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted 1-D array."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def _grouped_pos_neg(
    scores: np.ndarray, is_pos: np.ndarray, W: np.ndarray, descending: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted positive / negative counts per distinct score, in score order."""
    order = np.argsort(-scores if descending else scores, kind="mergesort")
    starts = _tie_groups(scores[order])
    Ws = W[:, order]
    pos = np.where(is_pos[order], Ws, 0.0)
    neg = Ws - pos
    if len(starts) < len(scores):  # reduceat is the slow part: only when ties exist
        pos = np.add.reduceat(pos, starts, axis=1)
        neg = np.add.reduceat(neg, starts, axis=1)
    return pos, neg


def _binary_auc(scores: np.ndarray, is_pos: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUROC (ties count 1/2), equal to sklearn's
    trapezoidal ROC area; nan where a replicate lacks positives or negatives."""
    pos, neg = _grouped_pos_neg(scores, is_pos, W, descending=False)
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(1)
    return _safe_div(num, pos.sum(1) * neg.sum(1))


def _binary_ap(scores: np.ndarray, is_pos: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted average precision, sum over thresholds of dRecall * Precision
    (sklearn's definition, no interpolation); nan without positives."""
    pos, neg = _grouped_pos_neg(scores, is_pos, W, descending=True)
    tp = np.cumsum(pos, axis=1)
    fp = np.cumsum(neg, axis=1)
    # A threshold group with zero weight has precision 0/0 but dRecall 0.
    precision = np.nan_to_num(_safe_div(tp, tp + fp), nan=0.0)
    return _safe_div((pos * precision).sum(1), tp[:, -1])


def _auroc_w(y: np.ndarray, probs: np.ndarray, W: np.ndarray, multi_class: str) -> np.ndarray:
    k = probs.shape[1]
    if k == 2 and multi_class != "onehot":
        return _binary_auc(probs[:, 1], y == 1, W)
    if multi_class in ("ovr", "onehot"):
        # Class c is nan in a replicate without it; macro over the classes present.
        per_class = np.stack([_binary_auc(probs[:, c], y == c, W) for c in range(k)], 1)
        return _masked_mean(per_class, ~np.isnan(per_class))
    # OvO (sklearn): for each pair a<b restricted to samples of a or b, the mean
    # of AUROC(a vs b on p_a) and AUROC(b vs a on p_b); macro over the pairs.
    # A pair is undefined when either class is missing.
    pairs = []
    for a in range(k):
        in_a = y == a
        if not in_a.any():
            continue
        for b in range(a + 1, k):
            mask = in_a | (y == b)
            if mask.sum() == in_a.sum():
                continue
            ya, Wm = y[mask] == a, W[:, mask]
            auc_a = _binary_auc(probs[mask, a], ya, Wm)
            auc_b = _binary_auc(probs[mask, b], ~ya, Wm)
            pairs.append(0.5 * (auc_a + auc_b))
    if not pairs:
        return np.full(W.shape[0], np.nan)
    per_pair = np.stack(pairs, 1)
    return _masked_mean(per_pair, ~np.isnan(per_pair))


def _aupr_w(y: np.ndarray, probs: np.ndarray, W: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    if k == 2:
        return _binary_ap(probs[:, 1], y == 1, W)
    per_class = np.stack([_binary_ap(probs[:, c], y == c, W) for c in range(k)], 1)
    return _masked_mean(per_class, ~np.isnan(per_class))


def _topk_hits(y: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Per-sample hit of the true class in the top k scores.

    The rank of the true class is (#classes scoring strictly higher) + (#tied
    classes with a higher index): the tie order of sklearn's
    top_k_accuracy_score (stable ascending sort, read backwards).
    """
    true_score = probs[np.arange(len(y)), y][:, None]
    higher = (probs > true_score).sum(1)
    cols = np.arange(probs.shape[1])[None, :]
    tied_after = ((probs == true_score) & (cols > y[:, None])).sum(1)
    return (higher + tied_after) < k


def _resolve_metrics(metrics: Sequence[str] | str | None, k: int) -> list[str]:
    if metrics is None:
        return [m for m in METRIC_NAMES if m != "top3_accuracy" or k > 3]
    if isinstance(metrics, str):
        metrics = [metrics]
    names: list[str] = []
    for m in metrics:
        ok = m in METRIC_NAMES or (
            isinstance(m, str) and (t := _TOPK_RE.match(m)) is not None and int(t.group(1)) >= 1
        )
        if not ok:
            raise DataError(
                f"unknown metric {m!r}; known: {', '.join(METRIC_NAMES)} (or top<k>_accuracy)"
            )
        if m not in names:
            names.append(m)
    if not names:
        raise DataError("metrics is empty: name at least one metric")
    return names


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
    k = probs.shape[1]
    out: dict[str, np.ndarray] = {}
    label_based = {"accuracy", "balanced_accuracy", "weighted_f1", "macro_f1",
                   "kappa", "sensitivity", "specificity"}
    need_counts = strict or not label_based.isdisjoint(names)
    counts = _Counts(_confusion(y, pred, k, W)) if need_counts else None
    for name in names:
        if name == "accuracy":
            out[name] = counts.accuracy()
        elif name == "balanced_accuracy":
            out[name] = counts.balanced_accuracy()
        elif name == "weighted_f1":
            out[name] = counts.weighted_f1()
        elif name == "macro_f1":
            out[name] = counts.macro_f1()
        elif name == "kappa":
            out[name] = counts.kappa()
        elif name == "sensitivity":
            out[name] = counts.sensitivity(strict)
        elif name == "specificity":
            out[name] = counts.specificity(strict)
        elif name == "auroc":
            val = _auroc_w(y, probs, W, multi_class)
            if strict and k > 2:
                # sklearn's multi-class roc_auc_score raises unless every one of
                # the K classes occurs in y_true; the reference stores 0.0 then.
                val = np.where((counts.support > 0).all(1), val, np.nan)
            out[name] = val
        elif name == "aupr":
            out[name] = _aupr_w(y, probs, W)
        else:  # top<k>_accuracy
            kk = int(_TOPK_RE.match(name).group(1))
            if kk >= k:
                out[name] = np.ones(W.shape[0])
            else:
                out[name] = _safe_div(W @ _topk_hits(y, probs, kk).astype(float), W.sum(1))
    if strict:
        out = {n: np.nan_to_num(v, nan=0.0) for n, v in out.items()}
        if k == 2:
            # The reference unpacks a 2x2 confusion matrix; with a single label in
            # the replicate it is 1x1, the unpacking fails and both become 0.0.
            single = ((counts.support + counts.predicted) > 0).sum(1) < 2
            for n in ("sensitivity", "specificity"):
                if n in out:
                    out[n] = np.where(single, 0.0, out[n])
    return out


def _one(values: np.ndarray) -> float:
    return float(values[0])


# --------------------------------------------------------------------------- #
# Label metrics
# --------------------------------------------------------------------------- #
def _label_metric(name: str, y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    y, yp, k = _label_pair(y_true, y_pred, num_classes)
    counts = _Counts(_confusion(y, yp, k, np.ones((1, len(y)))))
    return _one(getattr(counts, name)())


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches (sklearn ``accuracy_score``; the README "top-1")."""
    return _label_metric("accuracy", y_true, y_pred)


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in ``y_true`` (sklearn ``balanced_accuracy_score``)."""
    return _label_metric("balanced_accuracy", y_true, y_pred)


def weighted_f1(y_true: Any, y_pred: Any) -> float:
    """Support-weighted F1 (sklearn ``f1_score(average='weighted')``)."""
    return _label_metric("weighted_f1", y_true, y_pred)


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean F1 over labels in ``y_true`` or ``y_pred`` (sklearn ``average='macro'``)."""
    return _label_metric("macro_f1", y_true, y_pred)


def quadratic_kappa(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Quadratic-weighted Cohen kappa with weights (i - j)^2 on the label values.

    Equals ``cohen_kappa_score(y_true, y_pred, weights='quadratic',
    labels=range(K))``, and sklearn's default call whenever every label between
    0 and the largest one occurs (the reference's test sets). nan when undefined
    (e.g. a single class everywhere).
    """
    y, yp, k = _label_pair(y_true, y_pred, num_classes)
    counts = _Counts(_confusion(y, yp, k, np.ones((1, len(y)))))
    return _one(counts.kappa())


def sensitivity(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Recall as in the DermFM-Zero bootstrap script (ref-dermfm-zero §4.4).

    Binary (K == 2): TP / (TP + FN) with class 1 positive (nan without positives).
    Multi-class: mean one-vs-rest recall over the classes present in ``y_true``,
    which equals balanced accuracy. ``K`` defaults to max label + 1 (at least 2).
    """
    y, yp, k = _label_pair(y_true, y_pred, num_classes)
    counts = _Counts(_confusion(y, yp, k, np.ones((1, len(y)))))
    return _one(counts.sensitivity(strict=False))


def specificity(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Specificity as in the DermFM-Zero bootstrap script (ref-dermfm-zero §4.4).

    Binary (K == 2): TN / (TN + FP) with class 1 positive (nan without negatives).
    Multi-class: mean over classes 0..K-1 of one-vs-rest TN / (TN + FP), skipping a
    class that makes up every sample. ``K`` defaults to max label + 1 (at least 2).
    """
    y, yp, k = _label_pair(y_true, y_pred, num_classes)
    counts = _Counts(_confusion(y, yp, k, np.ones((1, len(y)))))
    return _one(counts.specificity(strict=False))


# --------------------------------------------------------------------------- #
# Score metrics
# --------------------------------------------------------------------------- #
def probs_to_pred(probs: Any) -> np.ndarray:
    """Predicted class per row: argmax (first column on ties), int64."""
    return np.argmax(_as_probs(probs), axis=1).astype(np.int64)


def top_k_accuracy(y_true: Any, probs: Any, k: int = 3) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Same as sklearn ``top_k_accuracy_score(y_true, probs, k=k, labels=range(K))``,
    including its tie order. The reference zero-shot code omits ``labels=`` and
    therefore *crashes* when a class is absent from ``y_true`` (SNU-134, SD-128);
    here the class columns are always 0..K-1, so it does not. 1.0 when k >= K.
    """
    y, p = _labels_and_probs(y_true, probs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    if k >= p.shape[1]:
        return 1.0
    return float(_topk_hits(y, p, int(k)).mean())


def auroc(y_true: Any, probs: Any, multi_class: str = "ovr") -> float:
    """Area under the ROC curve.

    Binary (K == 2): ``roc_auc_score(y, probs[:, 1])``. Multi-class: macro
    ``"ovr"`` (zero-shot code and DermFM-Zero bootstrap) or macro ``"ovo"``
    (linear-probe code), as sklearn computes them.

    ``"onehot"`` is the zero-shot code's ``roc_auc_score(one_hot, probs,
    average="macro")``: the mean of every column's one-vs-rest AUROC, both columns
    when K == 2. That equals the binary AUROC on p1 unless probabilities tie: p0
    is rounded on its own, so rows tied on p1 can differ on p0 (and the other way
    round), and each column gives tied rows half credit. For K > 2 it is ``"ovr"``.

    Differences from sklearn, which raises in these cases: classes absent from
    ``y_true`` are left out of the macro mean (OvR: their column; OvO: every pair
    involving them), and the result is nan when fewer than 2 classes are present.
    Scores need not sum to 1 (sklearn insists for multi-class); only their order
    within a column matters.
    """
    _check_multi_class(multi_class)
    y, p = _labels_and_probs(y_true, probs)
    return _one(_auroc_w(y, p, np.ones((1, len(y))), multi_class))


def aupr(y_true: Any, probs: Any) -> float:
    """Average precision (area under the precision-recall curve, no interpolation).

    Binary (K == 2): ``average_precision_score(y, probs[:, 1])``. Multi-class:
    macro mean of per-class one-vs-rest AP, as
    ``average_precision_score(y, probs, average='macro')`` (linear-probe code).
    Classes absent from ``y_true`` are left out of the mean (sklearn raises);
    binary without positives gives nan (sklearn warns and returns 0).
    """
    y, p = _labels_and_probs(y_true, probs)
    return _one(_aupr_w(y, p, np.ones((1, len(y)))))


def _prepare(
    y_true: Any, probs: Any, y_pred: Any, multi_class: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_multi_class(multi_class)
    y, p = _labels_and_probs(y_true, probs)
    if y_pred is None:
        pred = np.argmax(p, axis=1).astype(np.int64)
    else:
        pred = _as_labels(y_pred, "y_pred")
        if len(pred) != len(y):
            raise DataError(f"y_pred has {len(pred)} labels but y_true has {len(y)}")
        _check_range(pred, p.shape[1], "y_pred", "probs has")
    return y, p, pred


def classification_metrics(
    y_true: Any,
    probs: Any,
    metrics: Sequence[str] | None = None,
    multi_class: str = "ovr",
    *,
    y_pred: Any = None,
) -> dict[str, float]:
    """Named metrics on the whole set, as ``{name: float}`` in request order.

    ``metrics`` defaults to all of :data:`METRIC_NAMES`, with ``top3_accuracy``
    only when K > 3 (it is trivially 1.0 otherwise). ``top<k>_accuracy`` works
    for any k. ``kappa`` is quadratic-weighted. Label-based metrics use
    ``y_pred`` when given (e.g. the ``predicted_label`` column of a results CSV),
    else the argmax of ``probs``. Undefined values are nan.
    """
    y, p, pred = _prepare(y_true, probs, y_pred, multi_class)
    names = _resolve_metrics(metrics, p.shape[1])
    values = _compute(names, y, p, pred, np.ones((1, len(y))), multi_class)
    return {n: _one(values[n]) for n in names}


# --------------------------------------------------------------------------- #
# Bootstrap
# --------------------------------------------------------------------------- #
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
