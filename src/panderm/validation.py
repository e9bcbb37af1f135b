"""Checks of the arrays and label vectors handed to panderm's library functions.

One home for "is this a usable [N, D] matrix / label vector / probability matrix / whole-number setting", so
every task reports the same mistake with the same one-line :class:`~panderm.errors.DataError`. The checks are
free of torch (a tensor is read through its ``detach``/``cpu`` methods), so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import DataError

__all__ = [
    "PROBABILITY_ROW_TOL",
    "as_matrix",
    "binary_labels_and_scores",
    "check_int",
    "check_probability_rows",
    "encode_labels",
]

#: Rows of a probability matrix may miss a sum of 1 by this much: float32 softmax over 100+ classes and CSV
#: round trips leave ~1e-6; scores that are not probabilities at all (logits, independent sigmoids) miss by more.
PROBABILITY_ROW_TOL = 1e-3


def as_matrix(X: Any, name: str = "X", n_cols: int | None = None, what: str = "columns") -> np.ndarray:
    """``X`` as a C-contiguous float32 ``[N, D]`` array with N, D >= 1 and only finite values, or DataError.

    ``n_cols`` demands a column count; ``what`` names what it must match in the message.
    """
    if hasattr(X, "detach") and hasattr(X, "cpu"):  # a torch tensor, without importing torch here
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged nested lists and the like
        raise DataError(f"{name} is not a numeric array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 2-D array [N, D], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape})")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise DataError(f"{name} has shape {arr.shape} but {n_cols} {what} are expected")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{name} has {int(bad.sum())} non-finite values (first at row {row}, column {col})")
    return arr


def encode_labels(labels: Any, n: int) -> tuple[np.ndarray, list[Any]]:
    """Labels of any sortable kind for ``n`` feature rows → ``(codes 0..K-1, sorted class values)``, K >= 2.

    DataError when they are not 1-D, not ``n`` long, missing, of mixed incomparable types or a single class.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise DataError(f"labels has {len(arr)} entries but features has {n} rows")
    missing = pd.isna(arr)
    if missing.any():
        raise DataError(f"labels has {int(missing.sum())} missing values (first at row {int(np.argmax(missing))})")
    try:
        classes, codes = np.unique(arr, return_inverse=True)
    except TypeError:  # mixed types cannot be sorted
        raise DataError("labels mix types that cannot be compared (e.g. numbers and strings)") from None
    if len(classes) < 2:
        raise DataError(f"labels hold a single class ({classes[0]!r}); a classifier needs at least 2")
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def check_int(value: Any, name: str, minimum: int = 1, param: str | None = None) -> int:
    """``value`` as an int when it is a whole number (not a bool) >= ``minimum``; else DataError naming ``name``.

    ``param`` is the setting the error points the caller's door at (see :class:`~panderm.errors.PandermError`).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}", param=param)
    return int(value)


def check_probability_rows(p: np.ndarray, prefix: str = "") -> np.ndarray:
    """``p`` (a finite ``[N, K]`` array) when no entry is negative and every row sums to 1; else DataError.

    ``prefix`` starts the message (e.g. ``"validation: "``).
    """
    if (p < 0).any():
        r, c = np.argwhere(p < 0)[0]
        raise DataError(f"{prefix}probs has a negative probability {p[r, c]} at row {r}, column {c}")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > PROBABILITY_ROW_TOL
    if off.any():
        r = int(np.flatnonzero(off)[0])
        raise DataError(f"{prefix}probs row {r} sums to {sums[r]:.6g}, not 1 (calibration needs probabilities, "
                        "e.g. a softmax, not logits or per-class scores)")
    return p


def binary_labels_and_scores(y_binary: Any, scores_a: Any, scores_b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's inputs: ``(positive mask, scores_a, scores_b)`` as 1-D arrays of one length, or DataError.

    Labels are bool or 0/1; the two float64 score vectors must be finite.
    """
    y = np.asarray(y_binary)
    sa = np.asarray(scores_a, dtype=np.float64)
    sb = np.asarray(scores_b, dtype=np.float64)
    if y.ndim != 1 or sa.shape != y.shape or sb.shape != y.shape:
        raise DataError(f"DeLong needs 1-D labels and two 1-D score vectors of the same length, got shapes "
                        f"{y.shape}, {sa.shape}, {sb.shape}")
    if y.dtype == bool:
        pos = y
    else:
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise DataError(f"DeLong needs binary labels 0/1, got values {sorted(values)[:5]}")
        pos = y == 1
    for name, s in (("scores_a", sa), ("scores_b", sb)):
        if not np.isfinite(s).all():
            raise DataError(f"{name} holds a non-finite score at position {int(np.flatnonzero(~np.isfinite(s))[0])}")
    return pos, sa, sb
