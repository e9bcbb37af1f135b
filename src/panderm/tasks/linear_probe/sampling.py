"""Train subsampling of the linear probe: the reference's per-class fractions and K-shot sets.

Both return row indices into the train split (docs/REFERENCE.md, Linear probe): the same rows, in the same
order, as the reference picks them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import DataError

#: ``random_state`` of the reference's pandas shuffles and per-class samples. Seed ``s`` uses
#: ``REFERENCE_RANDOM_STATE + s``, so seed 0 reproduces the reference exactly.
REFERENCE_RANDOM_STATE = 42


def _as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array, or raise DataError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        # Float labels that are whole numbers (e.g. read from a CSV with NaNs elsewhere) are accepted.
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DataError(f"{name} must be integers 0..K-1, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def kept_per_class(n: int, percent: float) -> int:
    """Rows of a class of ``n`` the reference keeps at ``percent`` < 1: ``min(n, max(1, floor(n·p)))``."""
    return min(n, max(1, int(n * percent)))


def subsample_train(labels: Any, percent: float, seed: int = REFERENCE_RANDOM_STATE) -> np.ndarray:
    """Row indices of the train split kept for a training fraction, exactly as the reference picks them.

    The reference (``load_data_balanced``) does, with pandas and ``random_state=seed`` (42) at every step:

    1. shuffle the train rows: ``df.sample(frac=1, random_state=seed)``;
    2. for ``p < 1``, for each label group in ascending label order (``groupby`` sorts), sample
       ``n_c = min(|g|, max(1, floor(|g|·p)))`` rows with ``g.sample(n=n_c, random_state=seed)``, concatenated
       in label order;
    3. shuffle the concatenation again: ``.sample(frac=1, random_state=seed)``.

    For ``p >= 1`` only step 1 happens (the reference still shuffles train), so all rows come back in that
    shuffled order. The same pandas calls are made here (pandas draws through ``numpy.random.RandomState``,
    whose streams are frozen), so the selected rows and their order are identical.

    Parameters
    ----------
    labels:
        Integer labels of the train split, in CSV order.
    percent:
        Fraction of each class to keep, in ``(0, 1]``; values above 1 keep everything.
    seed:
        The pandas ``random_state``. The reference uses 42 (:data:`REFERENCE_RANDOM_STATE`).

    Returns
    -------
    np.ndarray
        int64 positions into ``labels``, in the order the reference would feed the rows to the probe.
    """
    y = _as_labels(labels)
    if not (isinstance(percent, (int, float, np.integer, np.floating)) and math.isfinite(percent) and 0 < percent <= 1):
        raise DataError(f"percent_data must be in (0, 1], got {percent!r}")
    # Carry the original position through the pandas calls so we can return indices, not a frame.
    frame = pd.DataFrame({"label": y, "row": np.arange(len(y), dtype=np.int64)})
    shuffled = frame.sample(frac=1, random_state=seed).reset_index(drop=True)
    if percent >= 1:
        return shuffled["row"].to_numpy(dtype=np.int64)

    # An explicit loop over groups gives the same rows in the same order as the reference's
    # ``groupby(label, group_keys=False).apply(g.sample(...))`` (groups in sorted order, concatenated), without
    # the ``apply`` semantics that changed across pandas versions.
    parts = []
    for _, group in shuffled.groupby("label", sort=True):
        parts.append(group.sample(n=kept_per_class(len(group), percent), random_state=seed))
    kept = pd.concat(parts).sample(frac=1, random_state=seed)
    return kept["row"].to_numpy(dtype=np.int64)


def shots_per_class(labels: Any, k: int, seed: int = REFERENCE_RANDOM_STATE) -> tuple[np.ndarray, list[str]]:
    """Row indices for a K-shot train set: ``k`` rows per class (all of them if a class has fewer).

    Not in the reference, which only has fractions. Rows are taken in the order of a
    ``numpy.random.RandomState(seed).permutation`` of the train split, keeping the first ``k`` of each
    class, so the returned order is shuffled and a larger ``k`` extends a smaller one with the same seed.

    Returns
    -------
    (indices, warnings)
        int64 positions into ``labels`` and one message per class that has fewer than ``k`` rows (unlike
        CLIP_benchmark, which gives up in that case, the class is kept with the rows it has).
    """
    y = _as_labels(labels)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"shots must be a positive integer, got {k!r}")
    order = np.random.RandomState(seed).permutation(len(y))
    taken: dict[int, int] = {}
    keep = []
    for i in order:
        c = int(y[i])
        if taken.get(c, 0) < k:
            taken[c] = taken.get(c, 0) + 1
            keep.append(i)
    messages = [
        f"class {c} has only {n} train sample(s), fewer than {k} shots; using all {n}"
        for c, n in sorted(taken.items())
        if n < k
    ]
    return np.asarray(keep, dtype=np.int64), messages
