"""The one per-sample predictions schema of every `panderm` task (docs/OUTPUTS.md).

Columns, in this order:

    image_path, [image_path_2,] label, label_name, pred, pred_name, prob_<class name>...

`label` / `pred` are class indices, `label_name` / `pred_name` their class names, `pred` is the arg-max of
the `prob_*` columns (which sum to 1), one `prob_` column per class (also for two classes). `image_path_2` is
the second modality's image (multimodal: dermoscopic in `image_path`, clinical in `image_path_2`). Without
class names the names are the indices ("0", "1", ...). The reference doors keep the reference's own files.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["PRED_COLUMNS", "class_names_for", "predictions_frame", "prob_columns"]

#: The fixed leading columns (without the optional `image_path_2`).
PRED_COLUMNS = ("image_path", "label", "label_name", "pred", "pred_name")


def class_names_for(classnames: Sequence[str] | None, n_classes: int) -> list[str]:
    """`classnames` as strings, or "0".."K-1" when there are none."""
    if not classnames:
        return [str(k) for k in range(n_classes)]
    names = [str(c) for c in classnames]
    names += [str(k) for k in range(len(names), n_classes)]  # classes beyond the named ones: their index
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} classes")
    return names


def prob_columns(names: Sequence[str]) -> list[str]:
    """`prob_<name>` per class; a name given twice gets its index appended (`prob_<name>_<k>`)."""
    cols, seen = [], set()
    for k, name in enumerate(names):
        col = f"prob_{name}"
        if col in seen:
            col = f"prob_{name}_{k}"
        seen.add(col)
        cols.append(col)
    return cols


def predictions_frame(image_paths: Sequence, labels: Sequence[int], probs, classnames: Sequence[str] | None = None,
                      image_paths_2: Sequence | None = None):
    """Per-sample predictions in the panderm schema (one row per test image, in input order)."""
    import pandas as pd

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, K], got shape {probs.shape}")
    n, k = probs.shape
    labels = np.asarray(labels).astype(np.int64)
    paths = np.asarray([str(p) for p in image_paths], dtype=object)
    if len(labels) != n or len(paths) != n:
        raise ValueError(f"{len(paths)} images, {len(labels)} labels and {n} probability rows")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}")
    names = class_names_for(classnames, k)
    pred = probs.argmax(axis=1)
    name_arr = np.asarray(names, dtype=object)
    data = {"image_path": paths}
    if image_paths_2 is not None:
        paths_2 = np.asarray([str(p) for p in image_paths_2], dtype=object)
        if len(paths_2) != n:
            raise ValueError(f"{len(paths_2)} second-modality images for {n} rows")
        data["image_path_2"] = paths_2
    data.update(label=labels, label_name=name_arr[labels] if n else np.asarray([], dtype=object),
                pred=pred, pred_name=name_arr[pred] if n else np.asarray([], dtype=object))
    for col, j in zip(prob_columns(names), range(k)):
        data[col] = probs[:, j]
    return pd.DataFrame(data)
