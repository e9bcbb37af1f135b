"""The uniform table of the multimodal task: one row per case, every split, validated before a model loads.

`MultimodalTable` and the helpers every loader shares (split names, the case frame, image checks naming the
CSV rows at fault; docs/REFERENCE.md, Multimodal finetune).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ...data.images import PIXEL_LIMIT_PARAM
from ...data.tables import _probe, _rows, list_items
from ...data.tables import check_images as _check_images
from ...errors import DataError

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}

# Derm7pt's 20 diagnoses grouped into the reference's 5 classes

CLINICAL, DERM = "clinical_path", "derm_path"

# -- the uniform table -------------------------------------------------------------------

@dataclass
class MultimodalTable:
    """Validated cases of one dataset, all splits together.

    `frame` has `clinical_path`, `derm_path`, `label`, `split`, `prompt`; `meta` holds the
    raw metadata columns row for row (for `one_hot_metadata`). When a dataset has no
    dermoscopic image (PAD-UFES-20), `derm_path` repeats the clinical path, as the
    reference does.
    """

    name: str
    source: str
    frame: pd.DataFrame
    meta: pd.DataFrame
    meta_columns: tuple[str, ...]
    num_classes: int
    classnames: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)

    @property
    def prompts(self) -> list[str]:
        return self.frame["prompt"].tolist()

    def split_counts(self) -> dict[str, int]:
        counts = self.frame["split"].value_counts()
        return {s: int(counts.get(s, 0)) for s in SPLITS}

    def metadata(self, i: int) -> dict:
        """Row i's raw metadata as a dict (missing values as None)."""
        row = self.meta.iloc[i]
        return {k: (None if not _is_scalar_present(v) else v) for k, v in row.items()}

    def subset(self, mask: np.ndarray) -> "MultimodalTable":
        idx = np.flatnonzero(mask)
        return MultimodalTable(
            self.name, self.source, self.frame.iloc[idx].reset_index(drop=True),
            self.meta.iloc[idx].reset_index(drop=True), self.meta_columns, self.num_classes,
            self.classnames, dict(self.extra),
        )

    def split(self, name: str) -> "MultimodalTable":
        """The rows of one split; an empty split is an error, not an empty dataset."""
        key = _SPLIT_ALIASES.get(str(name).strip().lower())
        if key is None:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        mask = (self.frame["split"] == key).to_numpy()
        if not mask.any():
            present = ", ".join(f"{s} ({n})" for s, n in self.split_counts().items() if n)
            raise DataError(f"{self.source}: the {key!r} split has no rows; splits present: {present or 'none'}")
        return self.subset(mask)


def _is_scalar_present(value: Any) -> bool:
    try:
        return bool(pd.notna(value))
    except (TypeError, ValueError):
        return True


def _splits(series: pd.Series, path: Path | str, col: str) -> list[str]:
    """train/val/test from a split column; 'valid', 'validation', ... are accepted."""
    raw = series.astype(str).str.strip().str.lower()
    mapped = raw.map(_SPLIT_ALIASES)
    bad = np.flatnonzero(mapped.isna().to_numpy() | series.isna().to_numpy())
    if len(bad):
        values = sorted({str(series.iloc[i]) for i in bad})
        raise DataError(
            f"{path}: column {col!r} has split value(s) {list_items(values, 10)} in row(s) {_rows(bad)}; "
            f"use {', '.join(SPLITS)}"
        )
    return mapped.tolist()


def _finish(name: str, source: str, parts: list[pd.DataFrame], metas: list[pd.DataFrame],
            meta_columns: Sequence[str], num_classes: int, classnames, check: bool,
            source_rows: Sequence[int] | None = None) -> MultimodalTable:
    frame = pd.concat(parts, ignore_index=True)
    meta = pd.concat(metas, ignore_index=True)
    frame["label"] = frame["label"].astype(np.int64)
    if check:
        paths = list(dict.fromkeys(frame[CLINICAL].tolist() + frame[DERM].tolist()))
        try:
            _check_images([Path(p) for p in paths], label=source)
        except DataError as exc:
            too_large = exc.param == PIXEL_LIMIT_PARAM  # the only hint that still holds for the case list
            raise DataError(f"{exc}; {_bad_image_rows(frame, parts, source_rows)}",
                            param=exc.param if too_large else None) from None
    return MultimodalTable(name, source, frame, meta, tuple(meta_columns), num_classes,
                           tuple(classnames) if classnames else None)


def _bad_image_rows(frame: pd.DataFrame, parts: list[pd.DataFrame], source_rows=None) -> str:
    """Which case rows (and which modality) point at an unusable image, for the error message.

    Rows are CSV row numbers as a person counts them (header = 1), as in the other errors: of the
    one CSV, of that split's CSV (meta/ folder), or of meta.csv (Derm7pt, `source_rows`).
    """
    bad: dict[str, bool] = {}

    def usable(p: str) -> bool:
        if p not in bad:
            bad[p] = _probe(Path(p)) is not None  # the same test as the image list's (too large, not an image, ...)
        return not bad[p]

    found, offset = [], 0
    for part in parts:
        n = len(part)
        for i in range(n):
            row = frame.iloc[offset + i]
            if source_rows is not None:
                where = f"meta.csv row {_rows([source_rows[offset + i]])}"
            else:
                where = f"{row['split']}.csv row {_rows([i])}" if len(parts) > 1 else f"row {_rows([i])}"
            for col, name in ((CLINICAL, "clinical"), (DERM, "dermoscopic")):
                if col == DERM and row[DERM] == row[CLINICAL]:
                    continue  # one image in both slots: report it once, as clinical
                if not usable(str(row[col])):
                    found.append(f"{where} ({name} image {row[col]})")
        offset += n
    if not found:
        return "unreadable image(s) listed above"
    return f"case {list_items(found, 10)}"


def _case_frame(clinical: Sequence, derm: Sequence, labels: Sequence[int], splits: Sequence[str],
                prompts: Sequence[str | None]) -> pd.DataFrame:
    return pd.DataFrame({
        CLINICAL: [str(p) for p in clinical], DERM: [str(p) for p in derm],
        "label": np.asarray(labels, dtype=np.int64), "split": list(splits), "prompt": list(prompts),
    })


def _meta_dir(root: Path, what: str) -> Path:
    """The folder holding {train,val,test}.csv: `root/meta` (the reference) or `root` itself."""
    if (root / "meta").is_dir():
        return root / "meta"
    if root.is_dir() and any((root / f"{s}.csv").exists() for s in SPLITS):
        return root
    if not root.exists():
        raise DataError(f"{what} folder not found: {root}")
    raise DataError(f"{root}: no meta/ folder with train.csv, val.csv and test.csv ({what} layout)")


def _image_base(image_root, meta_dir: Path) -> Path:
    """Where relative image paths start: `image_root`, else the dataset folder (meta/'s parent)."""
    if image_root is not None:
        return Path(image_root)
    return meta_dir.parent if meta_dir.name == "meta" else meta_dir

def _first_present(frame: pd.DataFrame, candidates: Sequence[str], given: str | None) -> str:
    if given is not None:
        return given
    for col in candidates:
        if col in frame.columns:
            return col
    return candidates[0]  # require_columns then names it in its error
