"""Patient metadata → a float vector per row, the multimodal task's metadata path without a text encoder.

The vocabulary (z-score statistics of numeric columns, categories of the others) is learnt on the train split
and applied to the others (docs/REFERENCE.md, Multimodal finetune).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ...data.tables import _rows
from ...errors import DataError


def _present(value: Any) -> bool:
    """True unless the value is None or NaN (the reference's `pd.notna`)."""
    if value is None:
        return False
    try:
        return bool(pd.notna(value))
    except (TypeError, ValueError):  # list-like values: count as present
        return True


@dataclass(frozen=True)
class MetaColumn:
    """How one metadata column becomes features: a z-scored number or a one-hot block."""

    name: str
    kind: str  # "numeric" | "categorical"
    categories: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


@dataclass(frozen=True)
class MetaVocab:
    """The train split's metadata vocabulary; JSON-friendly via `to_dict` / `from_dict`."""

    columns: tuple[MetaColumn, ...] = field(default_factory=tuple)

    @property
    def dim(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def feature_names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [c.name] if c.kind == "numeric" else [f"{c.name}={v}" for v in c.categories]
        return out

    def to_dict(self) -> dict:
        return {"columns": [
            {"name": c.name, "kind": c.kind, "categories": list(c.categories), "mean": c.mean, "std": c.std}
            for c in self.columns
        ]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "MetaVocab":
        return cls(tuple(
            MetaColumn(str(c["name"]), str(c["kind"]), tuple(c.get("categories", ())),
                       float(c.get("mean", 0.0)), float(c.get("std", 1.0)))
            for c in data["columns"]
        ))


def _category(value: Any) -> str:
    # Keyed by text so a column read as bool in one split and as str in another ("True"
    # next to "UNK") still matches.
    return str(value).strip()


def _is_numeric_column(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _fit_column(series: pd.Series, name: str) -> MetaColumn:
    if _is_numeric_column(series):
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
        values = values[np.isfinite(values)]
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) else 1.0  # population std (ddof=0)
        # A constant column carries no information; std 1 keeps it at 0 instead of NaN.
        return MetaColumn(name, "numeric", mean=mean, std=std if std > 0 and math.isfinite(std) else 1.0)
    cats = sorted({_category(v) for v in series if _present(v)})
    return MetaColumn(name, "categorical", categories=tuple(cats))


def _numeric_values(series: pd.Series, name: str, source: str) -> np.ndarray:
    numbers = pd.to_numeric(series, errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy() & series.notna().to_numpy())
    if len(bad):
        raise DataError(
            f"{source}: metadata column {name!r} is numeric in the train split but holds "
            f"{series.iloc[bad[0]]!r} in row(s) {_rows(bad)}"
        )
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def fit_metadata_vocab(frame: pd.DataFrame, columns: Sequence[str], source: str = "metadata") -> MetaVocab:
    """Learn the vocabulary (categories, means, stds) from the train split."""
    _require(frame, columns, source)
    return MetaVocab(tuple(_fit_column(frame[c], c) for c in columns))


def _require(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: metadata column(s) {', '.join(map(repr, missing))} not found; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )


def one_hot_metadata(
    frame: pd.DataFrame,
    columns: Sequence[str] | None,
    vocab: MetaVocab | Mapping | None = None,
    source: str = "metadata",
) -> tuple[np.ndarray, MetaVocab]:
    """Metadata as a float32 matrix [N, M] for the MLP metadata path; returns (X, vocab).

    Call it on the train split with `vocab=None` to learn the vocabulary, then pass that
    vocab for val/test (and save it with the model: `vocab.to_dict()` is JSON).

    - Categorical columns (text, booleans): one indicator per category seen in train, in
      sorted order. A missing value or a category never seen in train → all zeros.
    - Numeric columns: one feature, z-scored with the train mean and (population) std; a
      missing value → 0, i.e. the train mean.

    Departs from the reference, which ran `pd.get_dummies` on each split (raw, unscaled
    numbers; PAD filled NA with 0 first, so "0" became a category) - hence a different
    width (the reference's hard-coded 14 / 10 / 49).
    """
    if vocab is None:
        if columns is None:
            raise DataError("one_hot_metadata: give the metadata columns or a fitted vocabulary")
        vocab = fit_metadata_vocab(frame, columns, source)
    elif not isinstance(vocab, MetaVocab):
        vocab = MetaVocab.from_dict(vocab)
    if columns is not None and tuple(columns) != vocab.names:
        raise DataError(
            f"{source}: metadata columns {list(columns)} differ from the vocabulary's {list(vocab.names)}"
        )
    _require(frame, vocab.names, source)
    blocks = [np.zeros((len(frame), 0), dtype=np.float32)]
    for col in vocab.columns:
        series = frame[col.name]
        if col.kind == "numeric":
            values = (_numeric_values(series, col.name, source) - col.mean) / col.std
            blocks.append(np.nan_to_num(values, nan=0.0).astype(np.float32)[:, None])
        else:
            index = {v: j for j, v in enumerate(col.categories)}
            block = np.zeros((len(frame), len(col.categories)), dtype=np.float32)
            for i, v in enumerate(series):
                j = index.get(_category(v)) if _present(v) else None
                if j is not None:
                    block[i, j] = 1.0
            blocks.append(block)
    return np.concatenate(blocks, axis=1), vocab
