"""Reading the concept pipeline's input files: numeric ``.npy`` arrays and label columns of CSVs.

Every file is checked before any work is done, so bad input is one :class:`~panderm.errors.DataError` line
naming the file and the shapes, and never a partial output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from panderm.data.tables import read_csv, require_columns
from panderm.errors import DataError


def load_array(
    path: str | Path,
    name: str = "array",
    n_rows: int | None = None,
    rows_of: str = "",
    n_cols: int | None = None,
    cols_of: str = "",
    ndim: int | tuple[int, ...] = 2,
) -> np.ndarray:
    """A numeric ``.npy`` file as a numpy array, read with ``allow_pickle=False``; DataError for anything else.

    ``n_rows`` / ``n_cols`` demand a shape (``rows_of`` / ``cols_of`` say what must match, for the message).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{name} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{name} path is a folder, not a .npy file: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":  # PK: an .npz (zip) archive, named below
        raise DataError(f"{path} is not a .npy file (no .npy header); {name} must be a numeric array saved with "
                        "np.save")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if "pickle" in msg.lower() or "object" in msg.lower():
            raise DataError(f"{path} holds pickled Python objects; only plain numeric .npy arrays are read "
                            "(save with np.save(..., allow_pickle=False))") from None
        raise DataError(f"{path} is not a readable .npy array: {msg.splitlines()[0] if msg else 'ValueError'}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise DataError(f"{path} is an .npz archive; a single .npy array is expected")
    if arr.dtype.kind != "f":
        raise DataError(f"{path} holds dtype {arr.dtype}; {name} must be floating point (float16/32/64)")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise DataError(f"{path} has shape {arr.shape}; {name} must be {want}")
    if arr.size == 0:
        raise DataError(f"{path} is empty (shape {arr.shape}); {name} needs at least one row and column")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(f"{path} has {arr.shape[0]} rows (shape {arr.shape}) but {rows_of or 'the input'} "
                        f"has {n_rows}; they must be in the same order, one row each")
    if n_cols is not None and arr.shape[-1] != n_cols:
        raise DataError(f"{path} has shape {arr.shape} but {cols_of or 'the model'} expects {n_cols} columns")
    out = np.asarray(arr)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise DataError(f"{path} holds non-finite values (first at index {tuple(int(i) for i in bad)})")
    return np.array(out)  # a real in-memory copy, the file handle closed


def read_labels(
    csv: str | Path,
    label_col: str | None = None,
    position: int = 2,
    binary: bool = False,
    split_col: str | None = None,
) -> tuple[np.ndarray, str, np.ndarray | None, int]:
    """Labels (and optional split values) of a CSV; returns ``(labels, label column, split or None, n_rows)``.

    ``label_col`` names the column; ``None`` takes the column at ``position`` (the reference: 2, the third
    column, for ``1_train_clf``; -1, the last one, for the biased CBM). ``binary`` demands exactly two classes.
    Numeric labels stay numbers; text labels are classes sorted by name.
    """
    frame = read_csv(csv)
    if label_col is None:
        if not -frame.shape[1] <= position < frame.shape[1]:
            raise DataError(f"{csv} has {frame.shape[1]} columns; the reference takes the label from column "
                            f"{position + 1 if position >= 0 else 'last'}; name the label column", param="label_col")
        label_col = str(frame.columns[position])
    require_columns(frame, [label_col], csv, params={label_col: "label_col"})
    values = frame[label_col]
    missing = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        rows = ", ".join(str(i + 2) for i in missing[:5])
        raise DataError(f"{csv}: label column {label_col!r} is empty in {len(missing)} row(s) (line {rows})")
    numeric = pd.to_numeric(values, errors="coerce")
    labels = numeric.to_numpy() if numeric.notna().all() else values.astype(str).str.strip().to_numpy()
    classes = np.unique(labels)
    if binary and len(classes) != 2:
        shown = ", ".join(map(str, classes[:8])) + (" ..." if len(classes) > 8 else "")
        raise DataError(f"{csv}: label column {label_col!r} has {len(classes)} classes ({shown}); this binary "
                        "classifier needs exactly 2: choose another column", param="label_col")
    split = None
    if split_col is not None:
        require_columns(frame, [split_col], csv, params={split_col: "split_col"})
        split = frame[split_col].astype(str).str.strip().to_numpy()
    return labels, label_col, split, len(frame)
