"""Segmentation datasets: a CSV of (image, mask) rows or the ISIC 2018 Task 1 folders, validated up front.

Masks are 8-bit single-channel images (mode L, P or 1) aligned pixel for pixel with their image:
- binary (the default, `num_classes=None`): lesion where the value is > 127 (0/255 masks, anti-aliased
  edges thresholded);
- class ids (`num_classes=K`): every value in 0..K-1.

Every mask is read once before any model loads: a missing or unreadable mask, a size differing from its
image, values outside the classes, an RGB mask — each bad row named, in one `DataError` line.
EXIF orientation is ignored for images here (masks carry none; both are used as stored, so they stay aligned).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ...data.tables import _rows, list_items, read_csv, require_columns, resolve_paths
from ...errors import DataError

ISIC_SPLITS = {"train": "Training", "val": "Validation", "test": "Test"}


@dataclass
class SegTable:
    """Validated (image, mask) pairs of one split; `rows` name them in messages (CSV lines or file names)."""

    source: Path
    images: list[Path]
    masks: list[Path]
    ids: list[str]
    num_classes: int
    binary: bool
    rows: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: Sequence[int]) -> "SegTable":
        idx = list(idx)
        return SegTable(self.source, [self.images[i] for i in idx], [self.masks[i] for i in idx],
                        [self.ids[i] for i in idx], self.num_classes, self.binary, [self.rows[i] for i in idx])


def mask_to_labels(array: np.ndarray, binary: bool) -> np.ndarray:
    return (array > 127).astype(np.uint8) if binary else array.astype(np.uint8)


def read_mask(path: Path, num_classes: int | None) -> np.ndarray:
    """Class ids [H, W] uint8; DataError with a short reason (no path: callers add the row)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBX"):
                raise DataError(f"a {mode} mask ({len(img.getbands())} channels); save it as an 8-bit "
                                "single-channel (L) image of class ids or 0/255")
            if mode not in ("L", "P", "1"):
                raise DataError(f"a {mode} mask; masks must be 8-bit single-channel (L, P or 1)")
            array = np.asarray(img.convert("L") if mode == "1" else img)
    except FileNotFoundError:
        raise DataError("missing") from None
    except IsADirectoryError:
        raise DataError("a directory") from None
    except UnidentifiedImageError:
        raise DataError("not an image") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
                        ) from None
    if num_classes is None:
        values = np.unique(array)
        if 0 < values.max() <= 127:
            shown = "/".join(str(int(v)) for v in values[:6])
            raise DataError(f"values {shown} look like class ids, not a 0/255 binary mask (nothing above 127 would "
                            "be lesion); pass the number of classes to read them as class ids")
        return mask_to_labels(array, True)
    values = np.unique(array)
    bad = values[values >= num_classes]
    if len(bad):
        hint = "; a 0/255 binary mask needs no class count" if set(values.tolist()) <= {0, 255} else ""
        raise DataError(f"values {', '.join(str(int(v)) for v in bad[:5])} outside the {num_classes} classes "
                        f"0..{num_classes - 1}{hint}")
    return array.astype(np.uint8)


def _check_pair(image: Path, mask: Path, num_classes: int | None) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as img:
            size = img.size
    except FileNotFoundError:
        return f"image {image} [missing]"
    except (UnidentifiedImageError, OSError) as exc:
        return f"image {image} [unreadable: {type(exc).__name__}]"
    try:
        labels = read_mask(mask, num_classes)
    except DataError as exc:
        return f"mask {mask} [{exc}]"
    if (labels.shape[1], labels.shape[0]) != size:
        return (f"mask {mask} [size {labels.shape[1]}x{labels.shape[0]} differs from its image's "
                f"{size[0]}x{size[1]}]")
    return None


def check_pairs(table: SegTable, workers: int = 4) -> None:
    """One DataError line listing every bad row (image or mask) of `table`."""
    k = None if table.binary else table.num_classes
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(lambda ab: _check_pair(ab[0], ab[1], k), zip(table.images, table.masks)))
    bad = [(r, why) for r, why in zip(table.rows, problems) if why]
    if bad:
        raise DataError(f"{table.source}: {len(bad)} of {len(table)} row(s) cannot be used: "
                        + list_items([f"{r}: {why}" for r, why in bad]))


def _classes(num_classes: int | None) -> tuple[int, bool]:
    if num_classes is None:
        return 2, True
    if num_classes < 2:
        raise DataError(f"the number of classes must be at least 2 (background + lesion), got {num_classes}",
                        param="num_classes")
    if num_classes > 256:
        raise DataError(f"8-bit masks hold at most 256 classes, got {num_classes}", param="num_classes")
    return num_classes, False


def load_seg_csv(csv: str | os.PathLike, split: str | None = None, image_col: str = "image_path",
                 mask_col: str = "mask_path", split_col: str = "split", root: str | os.PathLike | None = None,
                 num_classes: int | None = None, check: bool = True) -> SegTable:
    """Rows of `csv` (of one split when given) as validated (image, mask) pairs; paths relative to `root`
    (default: the CSV's folder)."""
    csv = Path(csv)
    k, binary = _classes(num_classes)
    frame = read_csv(csv)
    require_columns(frame, [image_col, mask_col] + ([split_col] if split else []), csv,
                    {split_col: "split_col", mask_col: "mask_col", image_col: "image_col"})
    if split:
        frame = frame[frame[split_col].astype(str).str.strip() == split]
        if len(frame) == 0:
            raise DataError(f"{csv}: no rows with {split_col} == {split!r}")
    root = csv.parent if root is None else root
    images = resolve_paths(frame, image_col, root, csv)
    masks = resolve_paths(frame, mask_col, root, csv)
    rows = [f"row {_rows([i])}" for i in frame.index.to_numpy()]
    ids = [Path(p).stem for p in images]
    table = SegTable(csv, images, masks, ids, k, binary, rows)
    if check:
        check_pairs(table)
    return table


def load_isic2018(root: str | os.PathLike, split: str, num_classes: int | None = None,
                  check: bool = True) -> SegTable:
    """ISIC 2018 Task 1: ``<root>/ISIC2018_Task1-2_<Split>_Input/*.jpg`` or ``<root>/<Split>_Data/*.jpg``, masks
    ``<root>/…_GroundTruth/<id>_segmentation.png``; split is train, val or test. Images sorted by name."""
    root = Path(root).expanduser()
    if split not in ISIC_SPLITS:
        raise DataError(f"ISIC 2018 split must be one of {', '.join(ISIC_SPLITS)}, got {split!r}")
    name = ISIC_SPLITS[split]
    candidates = [(root / f"{name}_Data", root / f"{name}_GroundTruth"),
                  (root / f"ISIC2018_Task1-2_{name}_Input", root / f"ISIC2018_Task1_{name}_GroundTruth")]
    found = [(d, g) for d, g in candidates if d.is_dir()]
    if not found:
        raise DataError(f"{root}: no ISIC 2018 {split} images: expected the folder {candidates[0][0].name} "
                        f"(or {candidates[1][0].name})", param="data_root")
    data_dir, gt_dir = found[0]
    images = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise DataError(f"{data_dir}: no .jpg images")
    k, binary = _classes(num_classes)
    masks = [gt_dir / f"{p.stem}_segmentation.png" for p in images]
    table = SegTable(data_dir, images, masks, [p.stem for p in images], k, binary, [p.name for p in images])
    if check:
        check_pairs(table)
    return table


def percent_subset(table: SegTable, percent: float, seed: int) -> SegTable:
    """A seeded subset of round(percent% of n) rows (at least 1), drawn from the rows sorted by image path and
    kept in that order: the same rows for the same data, seed and percent, whatever the CSV order."""
    if not 0 < percent <= 100:
        raise DataError(f"the data percentage must be in (0, 100], got {percent}", param="percent_data")
    order = sorted(range(len(table)), key=lambda i: str(table.images[i]))
    if percent >= 100:
        return table.subset(order)
    n = max(1, int(round(len(order) * percent / 100)))
    picked = np.random.RandomState(seed).choice(len(order), n, replace=False)
    return table.subset([order[i] for i in sorted(picked.tolist())])
