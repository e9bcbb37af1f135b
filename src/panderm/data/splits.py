"""Split loading: one CSV with a split column → validated train / val / test tables (val optional).

Shared by the linear probe and finetuning (and anything else that trains on a split CSV). A missing column's
error names its setting (`param`), which the door prints as its own flag.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .tables import ImageTable, load_table

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}


@dataclass
class Splits:
    csv: Path
    tables: dict[str, ImageTable]

    @property
    def classnames(self) -> tuple[str, ...] | None:
        """The class names given with the CSV (label k = position k), or None."""
        return self.tables["train"].classnames

    @property
    def n_classes(self) -> int:
        if self.classnames:
            return len(self.classnames)
        return 1 + max(int(t.labels.max()) for t in self.tables.values())

    def class_labels(self) -> list[str]:
        """Names for classes 0..K-1: the class names when given, else the indices."""
        return list(self.classnames) if self.classnames else [str(k) for k in range(self.n_classes)]


def load_splits(csv: str | os.PathLike, image_col: str = "image_path", label_col: str = "label",
                split_col: str = "split", root=None, concat_prefix=None, classnames=None,
                allow_outside_root: bool = False) -> Splits:
    """Validate the CSV and cut it into train / val / test (val optional; `valid` / `validation` mean val)."""
    table = load_table(csv, image_col, root=root, label_col=label_col, classnames=classnames,
                       concat_prefix=concat_prefix, allow_outside_root=allow_outside_root)
    if split_col not in table.frame.columns:
        raise DataError(f"{csv}: column {split_col!r} not found (values train/val/test); columns are: "
                        f"{', '.join(map(str, table.frame.columns))}", param="split_col")
    values = table.frame[split_col].astype(str).str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLITS) - set(_SPLIT_ALIASES))
    if unknown:
        raise DataError(f"{csv}: column {split_col!r} has value(s) {unknown}; expected train, val, test")
    values = values.replace(_SPLIT_ALIASES)
    tables = {s: table.subset((values == s).to_numpy()) for s in SPLITS if (values == s).any()}
    for s in ("train", "test"):
        if s not in tables:
            raise DataError(f"{csv}: no rows with {split_col} == {s!r}")
    splits = Splits(Path(csv), tables)
    if splits.n_classes < 2:
        raise DataError(f"{csv}: every row has label 0: a classifier needs at least two classes")
    return splits
