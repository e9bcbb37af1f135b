"""The metric functions: one call per metric on a whole set, and `classification_metrics` for a named list.

Same definitions as the scikit-learn calls of the reference evaluation code (docs/REFERENCE.md, Metrics);
each function here is a view of its registry entry (:mod:`panderm.metrics.registry`), so the single-metric
call, the named list and the bootstrap cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from panderm.errors import DataError

from ._inputs import _as_labels, _as_probs, _check_multi_class, _check_range, _label_pair, _labels_and_probs
from .engine import _aupr_w, _auroc_w, _topk_hits
from .registry import _BUILTIN, _compute, _one, _resolve_metrics, _Rows


def _label_metric(name: str, y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    y, yp, k = _label_pair(y_true, y_pred, num_classes)
    return _one(_BUILTIN[name](_Rows(y, None, yp, np.ones((1, len(y))), k=k)))


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
    return _label_metric("kappa", y_true, y_pred, num_classes)


def sensitivity(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Recall as in the DermFM-Zero bootstrap script (docs/REFERENCE.md, Metrics).

    Binary (K == 2): TP / (TP + FN) with class 1 positive (nan without positives).
    Multi-class: mean one-vs-rest recall over the classes present in ``y_true``,
    which equals balanced accuracy. ``K`` defaults to max label + 1 (at least 2).
    """
    return _label_metric("sensitivity", y_true, y_pred, num_classes)


def specificity(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Specificity as in the DermFM-Zero bootstrap script (docs/REFERENCE.md, Metrics).

    Binary (K == 2): TN / (TN + FP) with class 1 positive (nan without negatives).
    Multi-class: mean over classes 0..K-1 of one-vs-rest TN / (TN + FP), skipping a
    class that makes up every sample. ``K`` defaults to max label + 1 (at least 2).
    """
    return _label_metric("specificity", y_true, y_pred, num_classes)


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
    only when K > 3 (it is trivially 1.0 otherwise), then the metrics added with
    :func:`register_metric`. ``top<k>_accuracy`` works for any k. ``kappa`` is quadratic-weighted. Label-based metrics use
    ``y_pred`` when given (e.g. the ``predicted_label`` column of a results CSV),
    else the argmax of ``probs``. Undefined values are nan.
    """
    y, p, pred = _prepare(y_true, probs, y_pred, multi_class)
    names = _resolve_metrics(metrics, p.shape[1])
    values = _compute(names, y, p, pred, np.ones((1, len(y))), multi_class)
    return {n: _one(values[n]) for n in names}
