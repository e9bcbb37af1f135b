"""Input checks of the metric functions: labels, score matrices and the ``multi_class`` choice.

Labels are integers ``0..K-1`` where ``K`` is the number of columns of ``probs``; bad input raises
:class:`panderm.errors.DataError` with a one-line message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from panderm.errors import DataError

MULTI_CLASS = ("ovr", "ovo", "onehot")


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
    if multi_class not in MULTI_CLASS:
        raise DataError(f"multi_class must be 'ovr', 'ovo' or 'onehot', got {multi_class!r}")
