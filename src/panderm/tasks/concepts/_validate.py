"""Input checks shared by the SAE and CBM code (kept free of torch so the CBM imports stay light)."""

from __future__ import annotations

from typing import Any

import numpy as np

from panderm.errors import DataError


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
