"""CSV-described image datasets, validated before any model is loaded.

A dataset is a CSV plus a root folder. Every check reports the file, the column
and the rows at fault in one line (`DataError`), and lists every missing or
unreadable image rather than stopping at the first.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..report import file_sha256
from .images import PIXEL_LIMIT_PARAM, ImageTooLarge, open_header

MAX_LISTED = 10  # an error is one readable line; the count says how many more


def _rows(indices: Sequence[int], limit: int = 10) -> str:
    """CSV row numbers as a person counts them (header = line 1, first data row = 2).

    `indices` are positions in the frame as read (callers that filter rows keep the original index).
    """
    shown = ", ".join(str(int(i) + 2) for i in list(indices)[:limit])
    more = f" (+{len(indices) - limit} more)" if len(indices) > limit else ""
    return shown + more


def list_items(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def read_csv(path: str | os.PathLike, sep: str = ",", encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV with one clear error for each way it can be unusable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"CSV not found: {path}")
    if path.is_dir():
        raise DataError(f"CSV path is a directory: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"CSV is empty: {path}")
    try:
        frame = pd.read_csv(path, sep=sep, encoding=encoding, keep_default_na=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not {encoding} text (byte {exc.start}); save it as {encoding}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"CSV is empty: {path}") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"cannot parse CSV {path}: {str(exc).strip().splitlines()[-1]}") from None
    if frame.shape[1] == 1 and sep == ",":
        header = str(frame.columns[0])
        for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if other in header:
                raise DataError(f"{path} looks {name}-separated (header {header!r}); it must be comma-separated")
    if len(frame) == 0:
        raise DataError(f"CSV has a header but no rows: {path}")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Sequence[str], path, params: dict[str, str] | None = None) -> None:
    """Each of `columns` is in `frame`; a missing one's error names `params[col]` (the setting that names the
    column, e.g. "image_col"), which the door prints as its own flag."""
    for col in columns:
        if col not in frame.columns:
            raise DataError(f"{path}: column {col!r} not found; columns are: {', '.join(map(str, frame.columns))}",
                            param=(params or {}).get(col))


def parse_labels(frame: pd.DataFrame, col: str, path, classnames: Sequence[str] | None = None,
                 num_classes: int | None = None) -> np.ndarray:
    """Integer labels from ints, integral floats or class-name strings; range-checked."""
    values = frame[col]
    ids = frame.index.to_numpy()  # CSV row ids (the frame may be a filtered split)
    empty = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(empty):
        raise DataError(f"{path}: column {col!r} is empty in row(s) {_rows(ids[empty])}")
    k = num_classes if num_classes is not None else (len(classnames) if classnames is not None else None)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        arr = numeric.to_numpy(dtype=float)
        inf = np.flatnonzero(~np.isfinite(arr))
        if len(inf):
            raise DataError(f"{path}: column {col!r} has non-finite label(s) in row(s) {_rows(ids[inf])} "
                            f"(e.g. {arr[inf[0]]})")
        frac = np.flatnonzero(arr != np.round(arr))
        if len(frac):
            raise DataError(f"{path}: column {col!r} has non-integer labels in row(s) {_rows(ids[frac])} (e.g. {arr[frac[0]]})")
        labels = arr.astype(np.int64)
    else:
        if classnames is None:
            bad = np.flatnonzero(numeric.isna().to_numpy())
            raise DataError(
                f"{path}: column {col!r} holds text labels (row {_rows(ids[bad], 1)}: {values.iloc[bad[0]]!r}); "
                "give the class names so they can be mapped to indices", param="classnames")
        lookup = {str(n).strip().lower(): i for i, n in enumerate(classnames)}
        mapped = values.astype(str).str.strip().str.lower().map(lookup)
        unknown = np.flatnonzero(mapped.isna().to_numpy())
        if len(unknown):
            names = sorted({str(values.iloc[i]) for i in unknown})
            raise DataError(f"{path}: column {col!r} has label(s) not among the class names: {list_items(names, 10)} (row(s) {_rows(ids[unknown])})")
        labels = mapped.to_numpy(dtype=np.int64)
    if k is not None:
        bad = np.flatnonzero((labels < 0) | (labels >= k))
        if len(bad):
            raise DataError(
                f"{path}: column {col!r} has label(s) outside 0..{k - 1} in row(s) {_rows(ids[bad])} "
                f"(e.g. {labels[bad[0]]}); {k} class names were given"
            )
    elif (labels < 0).any():
        bad = np.flatnonzero(labels < 0)
        raise DataError(f"{path}: column {col!r} has negative label(s) in row(s) {_rows(ids[bad])}")
    else:
        _check_contiguous(labels, ids, col, path)
    return labels


def _check_contiguous(labels: np.ndarray, ids: np.ndarray, col: str, path) -> None:
    """Without class names K is the label set's size, so labels must be exactly 0..K-1.

    A gap would otherwise become classes without a single row (a 10-class head for labels {0, 5, 9}) and a
    label of 1e12 an allocation of that size; both are refused here, before anything is allocated.
    """
    present = np.unique(labels)
    if len(present) and present[-1] != len(present) - 1:
        gap = int(np.flatnonzero(present != np.arange(len(present)))[0])
        top = np.flatnonzero(labels == present[-1])
        raise DataError(
            f"{path}: column {col!r} labels must be 0..K-1 without gaps when no class names are given: "
            f"{len(present)} distinct label(s) up to {int(present[-1])} (row {_rows(ids[top], 1)}), no row has "
            f"label {gap}; relabel them 0..{len(present) - 1} or give the class names")


def _join(root, concat_prefix, value: str) -> Path:
    """The absolute path a CSV value names, exactly as it will be opened (and checked).

    Under `root`: os.path.join(root, value) (an absolute value is used as it is, `..` parts are kept). With
    `concat_prefix` (src/main.py's parent path): the plain string `prefix + value`, as the reference
    builds it. Without either: relative to the working directory. A leading `~` in a CSV value is never
    expanded: it is a folder name, as for os.path.join and PIL (only the root / prefix given on the
    command line is `~`-expanded).
    """
    if concat_prefix is not None:
        joined = os.path.expanduser(concat_prefix) + value if concat_prefix else value
    elif root is not None:
        joined = os.path.join(os.path.expanduser(os.fspath(root)), value)
    else:
        joined = value
    return Path(joined).absolute()


def resolve_paths(frame: pd.DataFrame, col: str, root: str | os.PathLike | None, path, concat_prefix: str | None = None,
                  allow_outside_root: bool = True) -> list[Path]:
    """Absolute image paths, one per row, exactly the files that will be opened.

    `root` joins like os.path.join (absolute values and `..` are taken as written, as in the reference);
    `concat_prefix` reproduces the reference's parent path, a plain string prefix; with neither, paths
    are relative to the working directory. A `~` in a value is not expanded (see `_join`). An empty cell or
    one holding a NUL byte is a DataError naming the rows and the column. `allow_outside_root` is accepted
    and ignored (paths outside the root used to need it; they are always accepted now).
    """
    raw = frame[col]
    ids = frame.index.to_numpy()
    empty = np.flatnonzero(raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy())
    if len(empty):
        raise DataError(f"{path}: column {col!r} is empty in row(s) {_rows(ids[empty])}")
    values = [v.strip() for v in raw.astype(str)]
    nul = [i for i, v in enumerate(values) if "\0" in v]
    if nul:
        raise DataError(f"{path}: column {col!r}, row(s) {_rows(ids[nul])}: image path {values[nul[0]]!r} holds a NUL "
                        "byte (\\x00), which no file name can contain")
    return [_join(root, concat_prefix, v) for v in values]


def warn_duplicates(frame: pd.DataFrame, columns: Sequence[str], path) -> list[int]:
    """Log one warning line for rows repeating an earlier row's `columns` (kept: duplicates are not dropped)."""
    import logging

    cols = [c for c in columns if c in frame.columns]
    if not cols or len(frame) < 2:
        return []
    dup = np.flatnonzero(frame.duplicated(subset=cols, keep="first").to_numpy())
    if len(dup):
        what = ("an earlier row exactly" if list(cols) == list(frame.columns)
                else "an earlier row's " + " and ".join(repr(c) for c in cols))
        logging.getLogger("panderm").warning(
            f"warning: {path}: row(s) {_rows(frame.index.to_numpy()[dup])} repeat {what} "
            f"({len(dup)} duplicate(s), kept)")
    return [int(i) for i in frame.index.to_numpy()[dup]]


def _probe(path: Path) -> str | None:
    from PIL import UnidentifiedImageError

    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if path.is_dir():
        return "a directory"
    if st.st_size == 0:
        return "empty file"
    try:
        with open_header(path) as img:
            img.size  # header only: full decoding happens once, during extraction
    except ImageTooLarge as exc:
        return exc.reason
    except UnidentifiedImageError:
        return "not an image"
    except OSError as exc:
        return f"unreadable ({exc})"
    return None


def check_images(paths: Sequence[Path], label: str = "", workers: int = 8, root=None,
                 rows: Sequence[int] | None = None) -> None:
    """Raise one DataError listing the missing, empty or non-image files (the first few, and how many).

    `rows`: the frame index of each path, so every listed image is named with its CSV row.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(_probe, paths))
    bad = [(i, p, why) for i, (p, why) in enumerate(zip(paths, problems)) if why]
    if bad:
        where = f" in {label}" if label else ""
        kinds = sorted({why.split(" (")[0] for _, _, why in bad})
        hint, param = "", None
        if len(bad) == len(paths) and kinds == ["missing"] and root is not None:
            hint, param = f"; no image exists under {root}: are the CSV's paths relative to another folder?", "image_root"
        elif "too large" in kinds:
            param = PIXEL_LIMIT_PARAM
        row = (lambda i: f"row {_rows([rows[i]])}: ") if rows is not None else (lambda i: "")
        raise DataError(
            f"{len(bad)} of {len(paths)} image(s){where} cannot be used ({', '.join(kinds)}): "
            + list_items([f"{row(i)}{p} [{why}]" for i, p, why in bad]) + hint, param=param
        )


@dataclass
class ImageTable:
    """A validated CSV of images: resolved paths, optional labels, the raw frame."""

    csv_path: Path
    frame: pd.DataFrame
    image_col: str
    paths: list[Path]
    labels: np.ndarray | None = None
    classnames: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def csv_sha256(self) -> str:
        if "sha256" not in self.extra:
            self.extra["sha256"] = file_sha256(self.csv_path)
        return self.extra["sha256"]

    def subset(self, mask: np.ndarray) -> "ImageTable":
        idx = np.flatnonzero(mask)
        return ImageTable(
            self.csv_path,
            self.frame.iloc[idx].reset_index(drop=True),
            self.image_col,
            [self.paths[i] for i in idx],
            None if self.labels is None else self.labels[idx],
            self.classnames,
            dict(self.extra),
        )


def load_table(
    csv: str | os.PathLike,
    image_col: str,
    root: str | os.PathLike | None = None,
    label_col: str | None = None,
    classnames: Sequence[str] | None = None,
    num_classes: int | None = None,
    split: str | None = None,
    split_col: str = "split",
    concat_prefix: str | None = None,
    check: bool = True,
    sep: str = ",",
    encoding: str = "utf-8",
    allow_outside_root: bool = False,
) -> ImageTable:
    """Read and validate a CSV dataset.

    Relative image paths resolve against `root`, which defaults to the CSV's folder (the reference doors
    pass the working directory instead); absolute and `../` paths are taken as written, a `~` is not
    expanded (see `resolve_paths`; `allow_outside_root` is accepted and ignored). Exact duplicate rows
    (same image path and label) are kept with one warning line. A missing column's error names its setting
    (`param` "image_col", "label_col" or "split_col").
    """
    csv = Path(csv)
    frame = read_csv(csv, sep=sep, encoding=encoding)
    needed = [image_col] + ([label_col] if label_col else []) + ([split_col] if split else [])
    roles = {split_col: "split_col", **({label_col: "label_col"} if label_col else {}), image_col: "image_col"}
    require_columns(frame, needed, csv, roles)
    if split:
        # Keep the original index so errors name the CSV's own line numbers.
        frame = frame[frame[split_col].astype(str).str.strip() == split]
        if len(frame) == 0:
            raise DataError(f"{csv}: no rows with {split_col} == {split!r}")
    if root is None and concat_prefix is None:
        root = csv.parent
    paths = resolve_paths(frame, image_col, root, csv, concat_prefix, allow_outside_root=allow_outside_root)
    warn_duplicates(frame, [image_col, label_col] if label_col else list(frame.columns), csv)
    labels = None
    if label_col:
        labels = parse_labels(frame, label_col, csv, classnames=classnames, num_classes=num_classes)
    if check:
        check_images(paths, label=str(csv), root=root if root is not None else (concat_prefix or "."),
                     rows=frame.index.to_numpy())
    return ImageTable(csv, frame.reset_index(drop=True), image_col, paths, labels,
                      tuple(classnames) if classnames else None)
