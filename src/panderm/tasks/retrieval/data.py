"""Image–caption pairs from a CSV, validated before any model is loaded."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...data.tables import ImageTable, _rows, check_images as _check, load_table
from ...errors import DataError


@dataclass
class RetrievalPairs:
    table: ImageTable
    captions: list[str]
    caption_col: str
    group_values: list | None = None  # the group-by column, one value per row

    def __len__(self) -> int:
        return len(self.captions)


def load_pairs(
    csv: str | os.PathLike,
    image_col: str,
    caption_col: str,
    *,
    root: str | os.PathLike | None = None,
    concat_prefix: str | None = None,
    group_by: str | None = None,
    check_images: bool = True,
    allow_outside_root: bool = False,
) -> RetrievalPairs:
    """One row = one (image, caption) pair. No `source` column is needed (the reference required one)."""
    table = load_table(csv, image_col, root=root, concat_prefix=concat_prefix, check=False,
                       allow_outside_root=allow_outside_root)
    frame = table.frame
    if caption_col not in frame.columns:
        raise DataError(f"{csv}: caption column {caption_col!r} not found; columns are: "
                        f"{', '.join(map(str, frame.columns))}", param="caption_col")
    raw = frame[caption_col]
    empty = np.flatnonzero(raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy())
    if len(empty):
        raise DataError(f"{csv}: caption column {caption_col!r} is empty in row(s) {_rows(empty)}")
    if len(frame) < 2:
        raise DataError(f"{csv}: retrieval needs at least 2 image-text pairs, got {len(frame)}")
    groups = None
    if group_by:
        if group_by not in frame.columns:
            raise DataError(f"{csv}: group-by column {group_by!r} not found; columns are: "
                            f"{', '.join(map(str, frame.columns))}", param="group_by")
        groups = frame[group_by].tolist()
    if check_images:
        _check(table.paths, label=str(csv), rows=list(range(len(table.paths))))
    return RetrievalPairs(table, raw.astype(str).tolist(), caption_col, groups)
