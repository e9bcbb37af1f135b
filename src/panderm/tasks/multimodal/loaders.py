"""Loaders of the multimodal datasets: Derm7pt, MILK-11, PAD-UFES-20 and any CSV, each to a `MultimodalTable`.

Layouts and label groupings as the reference reads them (docs/REFERENCE.md, Multimodal finetune); every
problem is one `DataError` naming the file, the column and the rows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ...data.tables import _rows, list_items, parse_labels, read_csv, require_columns, resolve_paths
from ...errors import DataError
from .prompts import (
    PAD_META_COLUMNS,
    PromptBuilder,
    build_prompts,
    canonical_name,
    derm7pt_prompt,
    get_prompt_builder,
    milk_prompt,
    pad_prompt,
)
from .table import (
    CLINICAL,
    DERM,
    SPLITS,
    MultimodalTable,
    _case_frame,
    _finish,
    _first_present,
    _image_base,
    _is_scalar_present,
    _meta_dir,
    _splits,
)

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
