"""The weighted engine behind every metric.

Every function takes a matrix of per-sample weights ``W[b, i]`` (how often sample ``i`` occurs in row ``b``)
and returns one value per row of ``W``, nan where the metric is undefined. A point estimate is the single row
``W = 1``; a bootstrap replicate is the count vector of its resampled indices; a subgroup is a 0/1 mask.
Duplicated rows and integer weights give the same confusion matrices, ranks and precision/recall curves as
the resampled data, so the bootstrap is vectorised over replicates and cannot drift from the point estimate.
"""

from __future__ import annotations

import numpy as np


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
        if strict:  # reference: 0.0 for a class without support, mean over all K
            return np.nan_to_num(_safe_div(self.tp, self.support), nan=0.0).mean(1)
        # Mean one-vs-rest recall over the classes present is balanced accuracy: one definition, used twice.
        return self.balanced_accuracy()

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

