"""Paired clinical + dermoscopic (+ metadata) datasets for the multimodal task.

Every loader returns the same `MultimodalTable`: one row per case with `clinical_path`,
`derm_path` (absolute), `label` (int), `split` (train / val / test) and `prompt` (the
metadata sentence), plus the raw metadata columns for the one-hot path. Everything is
validated before a model is loaded; each problem is one `DataError` naming the file, the
column and the rows (docs/REFERENCE.md for the formats):

- `load_derm7pt(dir_release)`: `meta/meta.csv`, `meta/{train,valid,test}_indexes.csv`,
  `images/`; 5 grouped classes.
- `load_milk11(root)`: `meta/{train,val,test}.csv` (`clinical_path`, `derm_path`, `target`).
- `load_pad_ufes20(path)`: the reference's `meta/{train,val,test}.csv` or one CSV with a
  split column (the bundled sample); the clinical image fills both image slots.
- `load_multimodal_csv(csv)`: any CSV with clinical/derm path, label, split and metadata.

`MultimodalDataset` turns a table into tensors. Departures from the reference
(`multimodal_finetune/src/dataloader.py`), each behind a flag where a published number
could depend on it:
- images are RGB; `bgr=True` restores the reference's accidental cv2 BGR input;
- the ImageNet std is 0.229; `std=REFERENCE_STD` restores its 0.228 typo;
- `resize_mode="antialias"` (the default) resizes once with antialiasing (train: 256, then
  the crop to 224; eval: 224); `resize_mode="reference"` follows the reference's cv2 /
  albumentations chain: every image to 224 first, then (train) to 256 and the crop back to
  224, each step bilinear with half-pixel centres and no antialiasing (cv2 INTER_LINEAR),
  rounded to 8-bit as cv2 keeps uint8 between steps; eval uses the 224 image as is. cv2's
  fixed-point interpolation may differ from this float arithmetic by ±1 grey level (against
  OpenCV 5.0 on random images: never more than 1, on about one value in eight);
- `paired_augmentation=False` gives the two images independent crops/flips (the
  reference always shares them);
- the label is a 0-d tensor (the reference returned shape [1] and squeezed later).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ...data.images import open_image
from ...data.tables import _probe, _rows, list_items, parse_labels, read_csv, require_columns, resolve_paths
from ...data.tables import check_images as _check_images
from ...errors import DataError
from .prompts import (
    PAD_META_COLUMNS,
    MetaVocab,
    PromptBuilder,
    build_prompts,
    canonical_name,
    derm7pt_prompt,
    get_prompt_builder,
    milk_prompt,
    one_hot_metadata,
    pad_prompt,
)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}

# Derm7pt's 20 diagnoses grouped into the reference's 5 classes
# (`Derm7PtDatasetGroupInfrequent`, docs/REFERENCE.md).
DERM7PT_CLASSES = ("BCC", "NEV", "MEL", "MISC", "SK")
DERM7PT_GROUPS = {
    "basal cell carcinoma": 0,
    **dict.fromkeys(("nevus", "blue nevus", "clark nevus", "combined nevus", "congenital nevus",
                     "dermal nevus", "recurrent nevus", "reed or spitz nevus"), 1),
    **dict.fromkeys(("melanoma", "melanoma (in situ)", "melanoma (less than 0.76 mm)",
                     "melanoma (0.76 to 1.5 mm)", "melanoma (more than 1.5 mm)", "melanoma metastasis"), 2),
    **dict.fromkeys(("dermatofibroma", "lentigo", "melanosis", "miscellaneous", "vascular lesion"), 3),
    "seborrheic keratosis": 4,
}
DERM7PT_META_COLUMNS = ("elevation", "sex", "location")
DERM7PT_INDEX_FILES = (("train", "train_indexes.csv"), ("val", "valid_indexes.csv"), ("test", "test_indexes.csv"))

MILK11_NUM_CLASSES = 11  # `target` 0..10; the reference names no classes
MILK11_META_COLUMNS = ("age", "sex", "site")
MILK11_MONET_COLUMNS = ("ulceration_crust", "vasculature_vessels", "erythema", "pigmented")

# PAD-UFES-20's diagnostic codes in label order (`target` 0..5).
PAD_CLASSES = ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")

RESIZE_MODES = ("antialias", "reference")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_STD = (0.228, 0.224, 0.225)  # the reference's typo (docs/REFERENCE.md)

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
            raise DataError(f"{exc}; {_bad_image_rows(frame, parts, source_rows)}") from None
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


# -- Derm7pt -----------------------------------------------------------------------------

def _read_indexes(path: Path, n_rows: int, meta_csv: Path) -> list[int]:
    frame = read_csv(path)  # a missing, empty or header-only file is already a DataError
    require_columns(frame, ["indexes"], path)
    values = pd.to_numeric(frame["indexes"], errors="coerce")
    bad = np.flatnonzero((values.isna() | (values != values.round())).to_numpy())
    if len(bad):
        raise DataError(f"{path}: column 'indexes' holds non-integer value(s) in row(s) {_rows(bad)} "
                        f"(e.g. {frame['indexes'].iloc[bad[0]]!r})")
    idx = values.to_numpy().astype(np.int64)
    out = np.flatnonzero((idx < 0) | (idx >= n_rows))
    if len(out):
        raise DataError(f"{path}: column 'indexes' points outside {meta_csv} (rows 0..{n_rows - 1}) "
                        f"in row(s) {_rows(out)} (e.g. {idx[out[0]]})")
    return idx.tolist()


def _derm7pt_labels(meta: pd.DataFrame, rows: list[int], meta_csv: Path) -> list[int]:
    diagnosis = meta["diagnosis"].astype(str).str.strip().str.lower()
    unknown = [i for i in rows if diagnosis.iloc[i] not in DERM7PT_GROUPS]
    if unknown:
        names = sorted({str(meta["diagnosis"].iloc[i]) for i in unknown})
        raise DataError(f"{meta_csv}: column 'diagnosis' has value(s) outside the 5 Derm7pt groups: "
                        f"{list_items(names, 10)} (row(s) {_rows(unknown)})")
    return [DERM7PT_GROUPS[diagnosis.iloc[i]] for i in rows]


def load_derm7pt(dir_release: str | os.PathLike, *, check_images: bool = True,
                 allow_outside_root: bool = False) -> MultimodalTable:
    """Derm7pt (clinical + dermoscopic + metadata) from the original release layout.

    Rows come in index-file order, train then val then test; a meta.csv row listed in two
    index files is an error (it would leak between splits).
    """
    root = Path(dir_release)
    meta_csv = root / "meta" / "meta.csv"
    meta = read_csv(meta_csv)
    require_columns(meta, ["diagnosis", "clinic", "derm", *DERM7PT_META_COLUMNS], meta_csv)
    order, splits, owner = [], [], {}
    for split, fname in DERM7PT_INDEX_FILES:
        path = root / "meta" / fname
        for pos, i in enumerate(_read_indexes(path, len(meta), meta_csv)):
            if i in owner:
                raise DataError(f"{path}: row {_rows([pos])} lists meta.csv row {i}, already in {owner[i]}")
            owner[i] = path.name
            order.append(i)
            splits.append(split)
    labels = _derm7pt_labels(meta, order, meta_csv)
    prompts = build_prompts(meta, derm7pt_prompt, str(meta_csv))  # CSV order: right row numbers
    images = root / "images"
    clinical = resolve_paths(meta, "clinic", images, meta_csv, allow_outside_root=allow_outside_root)
    derm = resolve_paths(meta, "derm", images, meta_csv, allow_outside_root=allow_outside_root)
    frame = _case_frame([clinical[i] for i in order], [derm[i] for i in order], labels, splits,
                        [prompts[i] for i in order])
    case_meta = meta.iloc[order].reset_index(drop=True)
    return _finish("derm7pt", str(root), [frame], [case_meta], DERM7PT_META_COLUMNS, len(DERM7PT_CLASSES),
                   DERM7PT_CLASSES, check_images, source_rows=order)


# -- MILK-11 -----------------------------------------------------------------------------

def load_milk11(root: str | os.PathLike, *, image_root: str | os.PathLike | None = None, monet: bool = False,
                check_images: bool = True, allow_outside_root: bool = False) -> MultimodalTable:
    """MILK-11 (clinical + dermoscopic) from `meta/{train,val,test}.csv`.

    Relative image paths resolve against `image_root`, by default the dataset folder (the
    reference opened them relative to its working directory; its door passes that).
    `monet=True` also requires the four MONET concept columns and adds them to the prompt.
    """
    root = Path(root)
    meta_dir = _meta_dir(root, "MILK-11")
    base = _image_base(image_root, meta_dir)
    meta_columns = MILK11_META_COLUMNS + (MILK11_MONET_COLUMNS if monet else ())
    parts, metas = [], []
    for split in SPLITS:
        csv = meta_dir / f"{split}.csv"
        frame = read_csv(csv)
        require_columns(frame, [CLINICAL, DERM, "target", *meta_columns], csv)
        labels = parse_labels(frame, "target", csv, num_classes=MILK11_NUM_CLASSES)
        prompts = build_prompts(frame, lambda row: milk_prompt(row, monet=monet), str(csv))
        parts.append(_case_frame(resolve_paths(frame, CLINICAL, base, csv, allow_outside_root=allow_outside_root),
                                 resolve_paths(frame, DERM, base, csv, allow_outside_root=allow_outside_root),
                                 labels, [split] * len(frame), prompts))
        metas.append(frame)
    return _finish("milk11", str(root), parts, metas, meta_columns, MILK11_NUM_CLASSES, None, check_images)


# -- PAD-UFES-20 -------------------------------------------------------------------------

def _first_present(frame: pd.DataFrame, candidates: Sequence[str], given: str | None) -> str:
    if given is not None:
        return given
    for col in candidates:
        if col in frame.columns:
            return col
    return candidates[0]  # require_columns then names it in its error


def _pad_part(frame: pd.DataFrame, csv: Path, base: Path, image_col: str | None, label_col: str | None,
              splits: list[str] | None, split_col: str, allow_outside_root: bool = False) -> pd.DataFrame:
    image_col = _first_present(frame, (CLINICAL, "image_path"), image_col)
    label_col = _first_present(frame, ("target", "label"), label_col)
    needed = [image_col, label_col, *PAD_META_COLUMNS] + ([split_col] if splits is None else [])
    require_columns(frame, needed, csv)
    if splits is None:
        splits = _splits(frame[split_col], csv, split_col)
    # int labels 0..5, or PAD-UFES-20's diagnostic codes (ACK, BCC, ...)
    labels = parse_labels(frame, label_col, csv, classnames=PAD_CLASSES)
    prompts = build_prompts(frame, pad_prompt, str(csv))  # from the raw values, before any fill
    paths = resolve_paths(frame, image_col, base, csv, allow_outside_root=allow_outside_root)
    return _case_frame(paths, paths, labels, splits, prompts)


def load_pad_ufes20(path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                    image_col: str | None = None, label_col: str | None = None, split_col: str = "split",
                    check_images: bool = True, allow_outside_root: bool = False) -> MultimodalTable:
    """PAD-UFES-20 (clinical + 17 metadata fields); the clinical image fills both slots.

    `path` is either the reference's folder with `meta/{train,val,test}.csv`
    (`clinical_path`, `target`) or a single CSV with a split column, such as the bundled
    sample (`image_path`, `label`, `split`). Labels are ints 0..5 or the diagnostic codes
    ACK, BCC, MEL, NEV, SCC, SEK (that order). Relative image paths resolve against
    `image_root`, by default the CSV's folder (single CSV) or the dataset folder.
    """
    path = Path(path)
    parts, metas = [], []
    if path.is_file() or path.suffix.lower() == ".csv":
        frame = read_csv(path)
        base = Path(image_root) if image_root is not None else path.parent
        parts.append(_pad_part(frame, path, base, image_col, label_col, None, split_col, allow_outside_root))
        metas.append(frame)
    else:
        meta_dir = _meta_dir(path, "PAD-UFES-20")
        base = _image_base(image_root, meta_dir)
        for split in SPLITS:
            csv = meta_dir / f"{split}.csv"
            frame = read_csv(csv)
            parts.append(_pad_part(frame, csv, base, image_col, label_col, [split] * len(frame), split_col,
                                   allow_outside_root))
            metas.append(frame)
    return _finish("pad-ufes-20", str(path), parts, metas, PAD_META_COLUMNS, len(PAD_CLASSES), PAD_CLASSES,
                   check_images)


# -- any CSV -----------------------------------------------------------------------------

def load_multimodal_csv(
    csv: str | os.PathLike,
    *,
    clinical_col: str | None = CLINICAL,
    derm_col: str | None = DERM,
    label_col: str = "label",
    split_col: str = "split",
    meta_columns: Sequence[str] = (),
    classnames: Sequence[str] | None = None,
    num_classes: int | None = None,
    image_root: str | os.PathLike | None = None,
    prompt: str | PromptBuilder | None = None,
    prompt_col: str | None = None,
    name: str = "csv",
    check_images: bool = True,
    allow_outside_root: bool = False,
) -> MultimodalTable:
    """One CSV: image path column(s), label, split and optional metadata.

    With only one of `clinical_col` / `derm_col` (the other None) that image fills both
    slots. The sentence is `prompt_col`'s text, or built by `prompt` (a builder name such
    as "pad-ufes-20", or a function of the row); otherwise it is empty. Labels are ints
    0..K-1 or, with `classnames`, class-name strings. Relative image paths resolve against
    `image_root`, by default the CSV's folder.
    """
    csv = Path(csv)
    if clinical_col is None and derm_col is None:
        raise DataError("give at least one image column (clinical_col or derm_col)")
    frame = read_csv(csv)
    image_cols = [c for c in (clinical_col, derm_col) if c is not None]
    needed = [*image_cols, label_col, split_col, *meta_columns, *([prompt_col] if prompt_col else [])]
    require_columns(frame, needed, csv)
    labels = parse_labels(frame, label_col, csv, classnames=classnames, num_classes=num_classes)
    k = num_classes or (len(classnames) if classnames else int(labels.max()) + 1)
    base = Path(image_root) if image_root is not None else csv.parent
    clinical = resolve_paths(frame, clinical_col or derm_col, base, csv, allow_outside_root=allow_outside_root)
    derm = resolve_paths(frame, derm_col, base, csv, allow_outside_root=allow_outside_root) if derm_col else clinical
    if prompt_col:
        prompts = frame[prompt_col].map(lambda v: str(v) if _is_scalar_present(v) else "").tolist()
    elif prompt is not None:
        prompts = build_prompts(frame, get_prompt_builder(prompt) if isinstance(prompt, str) else prompt, str(csv))
    else:
        prompts = [""] * len(frame)
    part = _case_frame(clinical, derm, labels, _splits(frame[split_col], csv, split_col), prompts)
    return _finish(name, str(csv), [part], [frame], meta_columns, k, classnames, check_images)


DATASET_LOADERS: dict[str, Callable[..., MultimodalTable]] = {
    "derm7pt": load_derm7pt,
    "milk11": load_milk11,
    "pad-ufes-20": load_pad_ufes20,
    "csv": load_multimodal_csv,
}


def load_multimodal(name: str, path: str | os.PathLike, **kwargs) -> MultimodalTable:
    """`load_multimodal("PAD", "data/PAD")`: dispatch on a dataset name (or "csv")."""
    key = "csv" if str(name).strip().lower() in ("csv", "generic") else canonical_name(name)
    return DATASET_LOADERS[key](path, **kwargs)


# -- image transforms --------------------------------------------------------------------

@dataclass(frozen=True)
class AugParams:
    """One draw of the train augmentation: crop box, flips and quarter turns."""

    top: int
    left: int
    height: int
    width: int
    vflip: bool
    hflip: bool
    rot90: int  # counter-clockwise quarter turns, 0..3


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def sample_crop(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box (top, left, h, w): area fraction in `scale`, aspect in `ratio`.

    Ten tries as torchvision and albumentations do, then the largest centred box whose
    aspect ratio is in range.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_aug_params(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                      generator: torch.Generator | None = None) -> AugParams:
    """The reference's train chain: RandomResizedCrop, VerticalFlip(0.5), HorizontalFlip(0.5),
    RandomRotate90(0.5) - which, when it fires, turns by a random 0..3 quarter turns."""
    top, left, h, w = sample_crop(height, width, scale, ratio, generator)
    vflip = _uniform(0, 1, generator) < 0.5
    hflip = _uniform(0, 1, generator) < 0.5
    rot = _randint(0, 3, generator) if _uniform(0, 1, generator) < 0.5 else 0
    return AugParams(top, left, h, w, vflip, hflip, rot)


def reference_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.resize(INTER_LINEAR) on an 8-bit image: bilinear, half-pixel centres, no antialias, rounded to uint8.

    `image` is float [C, H, W] in [0, 1] on the 1/255 grid; so is the result.
    """
    if tuple(image.shape[-2:]) == (size, size):
        return image  # cv2 returns a copy at the same size
    out = torch.nn.functional.interpolate(image[None] * 255, size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=False)[0]
    return out.round().clamp(0, 255) / 255


def apply_aug(image: torch.Tensor, params: AugParams, size: int, resize_mode: str = "antialias") -> torch.Tensor:
    """Apply one draw to a [C, H, W] float image; the output is [C, size, size]."""
    if resize_mode == "reference":
        crop = image[..., params.top:params.top + params.height, params.left:params.left + params.width]
        out = reference_resize(crop, size)
    else:
        out = TF.resized_crop(image, params.top, params.left, params.height, params.width, [size, size],
                              interpolation=InterpolationMode.BILINEAR, antialias=True)
    if params.vflip:
        out = TF.vertical_flip(out)
    if params.hflip:
        out = TF.horizontal_flip(out)
    if params.rot90:
        out = torch.rot90(out, params.rot90, dims=(-2, -1))
    return out


def to_float_tensor(image) -> torch.Tensor:
    """PIL image or uint8/float [C,H,W] tensor → float32 in [0, 1]."""
    if not isinstance(image, torch.Tensor):
        image = TF.pil_to_tensor(image)
    return TF.to_dtype(image, torch.float32, scale=True)


@dataclass
class PairedTransform:
    """Clinical + dermoscopic images → two normalised tensors.

    Train: resize to `resize_to`² → random resized crop to `image_size`² → vertical flip →
    horizontal flip → quarter turns. With `paired=True` (the reference) one parameter draw
    serves both images, so they stay aligned; with `paired=False` each gets its own draw.
    Eval (`train=False`): resize to `image_size`², deterministic.
    `resize_mode="reference"` first resizes every image to `image_size`² as the reference's
    loader did, and all resizes are `reference_resize` (cv2 INTER_LINEAR).
    `bgr=True` reverses the channels before normalising, exactly what the reference's cv2
    loading fed the encoders.
    """

    train: bool
    image_size: int = 224
    resize_to: int = 256
    paired: bool = True
    bgr: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resize_mode: str = "antialias"

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise DataError(f"unknown resize mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")

    def _resize(self, image: torch.Tensor, size: int) -> torch.Tensor:
        if self.resize_mode == "reference":
            return reference_resize(image, size)
        return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            image = image.flip(0)
        return TF.normalize(image, list(self.mean), list(self.std))

    def one(self, image, params: AugParams | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform one image (train: with `params`, or a fresh draw)."""
        image = to_float_tensor(image)
        if self.resize_mode == "reference":
            image = self._resize(image, self.image_size)  # the reference's loader: cv2.resize to 224 first
        if not self.train:
            return self._finish(self._resize(image, self.image_size))
        image = self._resize(image, self.resize_to)
        if params is None:
            params = self.sample(generator)
        return self._finish(apply_aug(image, params, self.image_size, self.resize_mode))

    def sample(self, generator: torch.Generator | None = None) -> AugParams:
        return sample_aug_params(self.resize_to, self.resize_to, self.scale, self.ratio, generator)

    def __call__(self, clinical, derm, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.sample(generator) if self.train and self.paired else None
        return self.one(clinical, shared, generator), self.one(derm, shared, generator)


# -- the torch Dataset -------------------------------------------------------------------

META_MODES = ("text", "onehot", "none")


class MultimodalDataset(Dataset):
    """Items `(clinical, derm, meta, label, index)` from a `MultimodalTable`.

    - `meta="text"`: the metadata sentence (a str; token ids with `tokenizer`);
      `"onehot"`: a float32 vector from `one_hot_metadata` (`vocab` learnt on train: pass
      the train dataset's `.vocab` to val/test; it is learnt here only for a train-only
      table); `"none"`: an empty tensor, so the default collate still works.
    - `train=True` applies the random augmentation, else the deterministic eval resize.
    """

    def __init__(
        self,
        table: MultimodalTable,
        train: bool,
        *,
        meta: str = "text",
        vocab: MetaVocab | dict | None = None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
        image_size: int = 224,
        resize_to: int = 256,
        paired_augmentation: bool = True,
        bgr: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_mode: str = "antialias",
    ):
        if meta not in META_MODES:
            raise DataError(f"unknown metadata mode {meta!r}; use one of {', '.join(META_MODES)}")
        if len(table) == 0:
            raise DataError(f"{table.source}: no cases to load")
        self.table = table
        self.meta_mode = meta
        self.tokenizer = tokenizer
        self.transform = PairedTransform(train, image_size, resize_to, paired_augmentation, bgr, mean, std,
                                         resize_mode=resize_mode)
        self._clinical = table.frame[CLINICAL].tolist()
        self._derm = table.frame[DERM].tolist()
        self._labels = table.labels
        self.vocab: MetaVocab | None = None
        self._onehot: np.ndarray | None = None
        if meta == "onehot":
            self._onehot, self.vocab = self._one_hot(vocab)
        elif meta == "text" and not any(table.prompts):
            raise DataError(f"{table.source}: no metadata sentences (load the CSV with prompt= or prompt_col=), "
                            "or use meta='onehot' / 'none'")

    def _one_hot(self, vocab) -> tuple[np.ndarray, MetaVocab]:
        table = self.table
        if vocab is None and set(table.frame["split"]) != {"train"}:
            raise DataError(f"{table.source}: one-hot metadata for a non-train split needs the vocabulary "
                            "learnt on the train split (pass vocab=train_dataset.vocab)")
        if vocab is None and not table.meta_columns:
            raise DataError(f"{table.source}: no metadata columns to encode (give meta_columns)")
        return one_hot_metadata(table.meta, table.meta_columns if vocab is None else None, vocab, table.source)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def _images(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clin_path, derm_path = self._clinical[index], self._derm[index]
        clinical = open_image(clin_path)
        if derm_path == clin_path:
            # One image in both slots (PAD-UFES-20): decode once; with a shared draw (or in
            # eval) the two tensors are identical, as in the reference.
            if not self.transform.train or self.transform.paired:
                out = self.transform.one(clinical)
                return out, out.clone()
            return self.transform(clinical, clinical)
        return self.transform(clinical, open_image(derm_path))

    def _meta(self, index: int):
        if self.meta_mode == "onehot":
            return torch.from_numpy(self._onehot[index])
        if self.meta_mode == "none":
            return torch.zeros(0)
        text = self.table.frame["prompt"].iat[index]
        return self.tokenizer([text])[0] if self.tokenizer is not None else text

    def __getitem__(self, index: int):
        clinical, derm = self._images(index)
        label = torch.tensor(int(self._labels[index]), dtype=torch.long)
        return clinical, derm, self._meta(index), label, index


def make_datasets(table: MultimodalTable, *, splits: Sequence[str] = SPLITS, meta: str = "text",
                  **kwargs) -> dict[str, MultimodalDataset]:
    """Train/val/test datasets; train is augmented and its one-hot vocabulary is reused."""
    out: dict[str, MultimodalDataset] = {}
    vocab = kwargs.pop("vocab", None)
    if meta == "onehot" and vocab is None:
        out["train"] = MultimodalDataset(table.split("train"), True, meta=meta, **kwargs)
        vocab = out["train"].vocab
    for split in splits:
        if split not in out:
            out[split] = MultimodalDataset(table.split(split), split == "train", meta=meta, vocab=vocab, **kwargs)
    return {s: out[s] for s in splits}


# -- class-balanced sampling -------------------------------------------------------------

def class_balanced_weights(labels) -> np.ndarray:
    """Per-sample weight N / (K · n_class), K = number of classes present (the reference's).

    Each class then carries the same total weight N/K and the weights sum to N. Accepts a
    label array, a `MultimodalTable` or a `MultimodalDataset` - the reference read
    `train_dataset.df` and so crashed on Derm7pt.
    """
    labels = np.asarray(getattr(labels, "labels", labels), dtype=np.int64).ravel()
    if labels.size == 0:
        raise DataError("cannot weight an empty training set")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels.size / (len(classes) * counts))[inverse].astype(np.float64)


def weighted_sampler(labels, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """`WeightedRandomSampler` with replacement, N draws per epoch (the reference's)."""
    weights = class_balanced_weights(labels)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                 num_samples=num_samples or len(weights), replacement=True, generator=generator)


__all__ = [
    "SPLITS", "DERM7PT_CLASSES", "DERM7PT_GROUPS", "DERM7PT_META_COLUMNS", "MILK11_META_COLUMNS",
    "MILK11_MONET_COLUMNS", "PAD_CLASSES", "PAD_META_COLUMNS", "IMAGENET_MEAN", "IMAGENET_STD",
    "REFERENCE_STD", "RESIZE_MODES", "reference_resize", "MultimodalTable", "load_derm7pt", "load_milk11", "load_pad_ufes20",
    "load_multimodal_csv", "load_multimodal", "DATASET_LOADERS", "AugParams", "sample_crop",
    "sample_aug_params", "apply_aug", "to_float_tensor", "PairedTransform", "MultimodalDataset",
    "make_datasets", "class_balanced_weights", "weighted_sampler",
]
