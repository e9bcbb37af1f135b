"""Dataset audit: duplicates, near-duplicates and group leakage across splits, and a leakage-free re-split.

`audit_dataset` reads a dataset CSV (the same image-root rules as every task: relative paths resolve against
`root`, default the CSV's folder) and reports what would make an evaluation flattering without anyone
noticing: one image on both sides of a split (byte-identical, or resized / re-encoded / mirrored), one patient
or lesion on both sides, classes that a split barely holds, files that cannot be read. Findings are results:
an unreadable image is listed with its reason, never raised.

`fix_splits` re-splits rows so that nothing found leaks: rows that share a group id or are duplicates of each
other form one unit, and units are dealt to splits to match each split's size and class mix.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..data.tables import read_csv, require_columns, resolve_paths
from ..errors import DataError
from .audit_hash import DEFAULT_PHASH_THRESHOLD, collect_facts, cosine_pairs, hamming_pairs

MISSING = "<missing>"  # a label or split cell left empty: counted as its own value, not dropped
PAIR_COLUMNS = ["row_a", "row_b", "image_a", "image_b", "split_a", "split_b", "label_a", "label_b", "kind",
                "same_path", "phash_distance", "flipped", "embed_cosine", "cross_split"]


def csv_row(position: int) -> int:
    """The CSV line a data row sits on, as a person counts (header = line 1): the project's row numbering."""
    return int(position) + 2


@dataclass
class AuditResult:
    """Everything `audit_dataset` found. Row numbers (`row_a`, `rows`, `row`) are CSV lines (header = 1)."""

    csv: str
    columns: dict
    n_rows: int
    n_files: int
    phash_threshold: int
    embed_threshold: float | None
    model: str | None
    duplicates: pd.DataFrame  # one row per pair of CSV rows, worst first (PAIR_COLUMNS)
    group_leaks: pd.DataFrame  # column, value, splits, n_rows, rows
    class_balance: pd.DataFrame  # split x label counts
    image_stats: dict
    unreadable: pd.DataFrame  # row, image, split, reason
    embed_from_cache: bool | None = None  # with a model: whether the embeddings came from the feature cache
    frame: pd.DataFrame = field(repr=False, default=None)
    paths: list = field(repr=False, default_factory=list)

    @property
    def cross_split_pairs(self) -> pd.DataFrame:
        return self.duplicates[self.duplicates["cross_split"]]

    @property
    def leakage(self) -> pd.DataFrame:
        """Every leak in one table: duplicate pairs across splits and group ids found in several splits."""
        pairs = self.cross_split_pairs
        dup = pd.DataFrame({
            "kind": pairs["kind"].map(lambda k: f"{k}_duplicate"),
            "column": self.columns["image"],
            "value": pairs["image_a"].astype(str) + " | " + pairs["image_b"].astype(str),
            "splits": [", ".join(sorted({a, b})) for a, b in zip(pairs["split_a"], pairs["split_b"])],
            "n_rows": 2,
            "rows": pairs["row_a"].astype(str) + " " + pairs["row_b"].astype(str),
        })
        groups = self.group_leaks.assign(kind="group")[["kind", "column", "value", "splits", "n_rows", "rows"]]
        return pd.concat([dup, groups], ignore_index=True) if len(groups) else dup.reset_index(drop=True)

    def pair_positions(self) -> list[tuple[int, int]]:
        """Duplicate pairs as 0-based positions in the CSV's rows (what `fix_splits` takes)."""
        return [(a - 2, b - 2) for a, b in zip(self.duplicates["row_a"], self.duplicates["row_b"])]

    def counts(self) -> dict:
        dup = self.duplicates
        return {
            "rows": self.n_rows, "files": self.n_files,
            "exact_duplicate_pairs": int((dup["kind"] == "exact").sum()),
            "near_duplicate_pairs": int((dup["kind"] == "near").sum()),
            "cross_split_pairs": int(dup["cross_split"].sum()),
            "group_leaks": {c: int((self.group_leaks["column"] == c).sum()) for c in self.columns["groups"]},
            "unreadable": len(self.unreadable),
        }

    def to_json(self) -> dict:
        records = lambda df: df.astype(object).where(df.notna(), None).to_dict(orient="records")  # noqa: E731
        return {
            "csv": self.csv, "columns": self.columns,
            "thresholds": {"phash_hamming": self.phash_threshold, "embed_cosine": self.embed_threshold},
            "model": self.model, "embed_from_cache": self.embed_from_cache, "counts": self.counts(),
            "class_balance": {str(s): {str(k): int(v) for k, v in row.items()}
                              for s, row in self.class_balance.iterrows()},
            "image_stats": self.image_stats,
            "duplicates": records(self.duplicates), "group_leaks": records(self.group_leaks),
            "unreadable": records(self.unreadable),
        }


def _cells(frame: pd.DataFrame, col: str | None) -> list[str]:
    if col is None:
        return ["all"] * len(frame)
    values = frame[col]
    return [MISSING if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in values]


def _image_stats(facts, readable: np.ndarray, paths) -> dict:
    seen, widths, heights, formats, modes, sizes = set(), [], [], Counter(), Counter(), Counter()
    for f, ok, p in zip(facts, readable, paths):
        if not ok or p in seen:
            continue
        seen.add(p)
        widths.append(f.width)
        heights.append(f.height)
        formats[f.format or "?"] += 1
        modes[f.mode or "?"] += 1
        sizes[f"{f.width}x{f.height}"] += 1
    if not widths:
        return {"files": 0}
    w, h = np.array(widths), np.array(heights)
    return {
        "files": len(widths),
        "width": {"min": int(w.min()), "median": float(np.median(w)), "max": int(w.max())},
        "height": {"min": int(h.min()), "median": float(np.median(h)), "max": int(h.max())},
        "formats": dict(formats.most_common()), "modes": dict(modes.most_common()),
        "distinct_sizes": len(sizes), "common_sizes": dict(sizes.most_common(5)),
    }


def _group_leaks(frame: pd.DataFrame, splits: list[str], group_cols: Sequence[str]) -> pd.DataFrame:
    rows = []
    for col in group_cols:
        ids = _cells(frame, col)
        members: dict[str, list[int]] = {}
        for pos, gid in enumerate(ids):
            if gid != MISSING:  # an empty id links nothing: rows without a patient id are not one patient
                members.setdefault(gid, []).append(pos)
        for gid, pos in members.items():
            where = sorted({splits[p] for p in pos} - {MISSING})  # a row in no split leaks into none
            if len(where) > 1:
                rows.append({"column": col, "value": gid, "splits": ", ".join(where), "n_rows": len(pos),
                             "rows": " ".join(str(csv_row(p)) for p in pos)})
    return pd.DataFrame(rows, columns=["column", "value", "splits", "n_rows", "rows"])


def _embeddings(model, paths: list[Path], options: dict) -> tuple[np.ndarray, str, bool]:
    """Image embeddings of `paths` through the feature extraction and its cache; (array, model id, from cache)."""
    from ..features import extract_features
    from ..models import load_encoder

    encoder = model
    if isinstance(model, str):
        encoder = load_encoder(model, checkpoint=options.get("checkpoint"), device=options.get("device", "cpu"),
                               allow_random_init=options.get("allow_random_init", False))
    if getattr(encoder, "random_init", False):
        import logging

        # Random weights map skin photos to nearly one direction: most pairs pass any cosine threshold.
        logging.getLogger("panderm").warning(
            "warning: %s has random weights: its embedding near-duplicates are not meaningful",
            getattr(encoder, "model_id", model))
    kind = "embed" if "embed" in encoder.image_kinds else encoder.image_kinds[0]
    result = extract_features(encoder, paths, kind, batch_size=options.get("batch_size", 64),
                              num_workers=options.get("num_workers"), precision=options.get("precision", "amp"),
                              cache=options.get("cache", True), cache_dir=options.get("cache_dir"))
    return np.asarray(result.array, dtype=np.float32), getattr(encoder, "model_id", str(model)), result.from_cache


def audit_dataset(
    csv: str | os.PathLike,
    image_col: str = "image_path",
    label_col: str | None = "label",
    split_col: str | None = "split",
    group_cols: Sequence[str] = (),
    root: str | os.PathLike | None = None,
    phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
    embed_threshold: float = 0.95,
    model=None,
    model_options: dict | None = None,
    workers: int | None = None,
) -> AuditResult:
    """Audit the dataset `csv` (see the module doc).

    `label_col` / `split_col` None: no class / split column (everything is one split, nothing leaks).
    `phash_threshold`: the largest flip-robust Hamming distance (of 143 bits) still called a near-duplicate.
    `model`: a model id or a loaded `Encoder`; when given, pairs with embedding cosine ≥ `embed_threshold` are
    near-duplicates too (embeddings come from the feature cache when there). `model_options`: checkpoint,
    device, batch_size, num_workers, precision, cache, cache_dir, allow_random_init.
    """
    csv = Path(csv)
    if not 0 <= int(phash_threshold) <= 143:
        raise DataError(f"the perceptual-hash threshold must be 0..143 bits, got {phash_threshold}")
    if model is not None and not -1.0 <= float(embed_threshold) <= 1.0:
        raise DataError(f"the embedding cosine threshold must be in [-1, 1], got {embed_threshold}")
    frame = read_csv(csv)
    group_cols = list(dict.fromkeys(group_cols))
    roles = {**{c: "group_col" for c in group_cols}, split_col: "split_col", label_col: "label_col",
             image_col: "image_col"}
    require_columns(frame, [image_col, *(c for c in (label_col, split_col) if c), *group_cols], csv, roles)
    root = csv.parent if root is None else Path(root).expanduser()
    paths = resolve_paths(frame, image_col, root, csv)
    facts = collect_facts(paths, workers)
    readable = np.array([f.reason is None for f in facts])
    splits, labels = _cells(frame, split_col), _cells(frame, label_col)
    written = [str(v).strip() for v in frame[image_col]]

    pairs: dict[tuple[int, int], dict] = {}

    def pair(i: int, j: int) -> dict:
        return pairs.setdefault((i, j), {"phash_distance": np.nan, "flipped": False, "embed_cosine": np.nan})

    for i, j, dist, flipped in hamming_pairs([f.phash for f in facts], [f.phash_flip for f in facts],
                                             int(phash_threshold), readable):
        pair(i, j).update(phash_distance=dist, flipped=flipped)
    by_sha: dict[str, list[int]] = {}
    for pos, f in enumerate(facts):
        if f.reason is None:
            by_sha.setdefault(f.sha256, []).append(pos)
    for members in by_sha.values():  # byte-identical files pair even if their hash distance were large
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pair(members[a], members[b])
    model_id, from_cache = None, None
    if model is not None:
        ok_rows = np.flatnonzero(readable)
        unique = list(dict.fromkeys(paths[p] for p in ok_rows))
        if unique:
            feats, model_id, from_cache = _embeddings(model, unique, model_options or {})
            where = {p: k for k, p in enumerate(unique)}
            row_feats = feats[[where[paths[p]] for p in ok_rows]]
            for a, b, cos in cosine_pairs(row_feats, float(embed_threshold)):
                pair(int(ok_rows[a]), int(ok_rows[b]))["embed_cosine"] = cos
        else:
            model_id = model if isinstance(model, str) else getattr(model, "model_id", None)

    records = []
    for (i, j), found in pairs.items():
        exact = facts[i].sha256 == facts[j].sha256
        records.append({
            "row_a": csv_row(i), "row_b": csv_row(j), "image_a": written[i], "image_b": written[j],
            "split_a": splits[i], "split_b": splits[j], "label_a": labels[i], "label_b": labels[j],
            "kind": "exact" if exact else "near", "same_path": paths[i] == paths[j], **found,
            "cross_split": splits[i] != splits[j] and MISSING not in (splits[i], splits[j]),
        })
    duplicates = pd.DataFrame(records, columns=PAIR_COLUMNS)
    if len(duplicates):
        # Worst first: leaks before within-split pairs, identical bytes before look-alikes, closest first.
        duplicates = duplicates.assign(_exact=duplicates["kind"] == "exact", _cos=-duplicates["embed_cosine"]).sort_values(
            ["cross_split", "_exact", "phash_distance", "_cos", "row_a", "row_b"],
            ascending=[False, False, True, True, True, True], na_position="last", kind="mergesort",
        ).drop(columns=["_exact", "_cos"]).reset_index(drop=True)
    duplicates["phash_distance"] = duplicates["phash_distance"].astype("Int64")

    bad = np.flatnonzero(~readable)
    unreadable = pd.DataFrame({"row": [csv_row(p) for p in bad], "image": [written[p] for p in bad],
                               "split": [splits[p] for p in bad], "reason": [facts[p].reason for p in bad]},
                              columns=["row", "image", "split", "reason"])
    balance = pd.crosstab(pd.Series(splits, name="split"), pd.Series(labels, name="label"))
    return AuditResult(
        csv=str(csv), columns={"image": image_col, "label": label_col, "split": split_col, "groups": group_cols,
                               "root": str(root)},
        n_rows=len(frame), n_files=len(set(paths)), phash_threshold=int(phash_threshold),
        embed_threshold=float(embed_threshold) if model is not None else None, model=model_id,
        duplicates=duplicates, group_leaks=_group_leaks(frame, splits, group_cols), class_balance=balance,
        image_stats=_image_stats(facts, readable, paths), unreadable=unreadable, embed_from_cache=from_cache,
        frame=frame, paths=paths,
    )


def _components(n: int, links: Iterable[tuple[int, int]]) -> np.ndarray:
    """Connected components (union-find with path halving) → a dense component id per row."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def fix_splits(
    frame: pd.DataFrame,
    *,
    split_col: str = "split",
    label_col: str | None = "label",
    group_cols: Sequence[str] = (),
    pairs: Iterable[tuple[int, int]] = (),
    seed: int = 0,
    fractions: dict | None = None,
) -> pd.DataFrame:
    """A copy of `frame` with `split_col` reassigned so that no group and no duplicate pair spans splits.

    Units: rows sharing a non-empty id in any of `group_cols`, joined with every (i, j) of `pairs` (0-based row
    positions, e.g. `AuditResult.pair_positions()`), transitively. Units are dealt largest first (ties in a
    seeded random order) to the split whose per-class counts and size then stay closest to their targets:
    `fractions` (split name → share; default: the shares the split column has now) times each class's count.
    Deterministic for a given `seed`.
    """
    n = len(frame)
    absent = [c for c in (label_col, *group_cols) if c and c not in frame.columns]
    if absent:
        raise DataError(f"column {absent[0]!r} not found; columns are: {', '.join(map(str, frame.columns))}")
    if fractions is None:
        if split_col not in frame.columns:
            raise DataError(f"column {split_col!r} not found: the re-split takes its split names and shares from "
                            "it (or give the fractions)")
        current = pd.Series(_cells(frame, split_col))
        current = current[current != MISSING]
        if current.empty:
            raise DataError(f"column {split_col!r} is empty in every row: no split shares to keep")
        fractions = current.value_counts().to_dict()
    names = sorted(fractions)
    share = np.array([float(fractions[s]) for s in names])
    if not np.all(np.isfinite(share)) or (share < 0).any() or share.sum() <= 0:
        raise DataError(f"split fractions must be non-negative numbers with a positive sum, got {fractions}")
    share = share / share.sum()

    links = [(int(a), int(b)) for a, b in pairs]
    outside = [p for p in links if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if outside:
        raise DataError(f"duplicate pair {outside[0]} names a row outside 0..{n - 1} (pairs are 0-based positions)")
    for col in group_cols:
        ids = pd.Series(_cells(frame, col))
        for _, members in ids[ids != MISSING].groupby(ids[ids != MISSING]).groups.items():
            members = list(members)
            links += [(members[0], m) for m in members[1:]]
    comp = _components(n, links)
    label_codes = np.unique(_cells(frame, label_col), return_inverse=True)[1]
    counts = np.zeros((comp.max() + 1 if n else 0, label_codes.max() + 1 if n else 0))
    np.add.at(counts, (comp, label_codes), 1)

    class_total = counts.sum(axis=0)
    target = share[:, None] * class_total[None, :]
    target_size = share * n
    have = np.zeros_like(target)
    size = np.zeros(len(names))
    weight = 1.0 / np.maximum(class_total, 1) ** 2  # each class's deviation as a share of that class
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    assigned = np.empty(len(counts), dtype=np.int64)
    for c in order:
        unit, k = counts[c], counts[c].sum()
        # The rise in squared deviation from target that placing this unit in each split would cause.
        cost = (((have + unit - target) ** 2 - (have - target) ** 2) * weight).sum(axis=1)
        cost += ((size + k - target_size) ** 2 - (size - target_size) ** 2) / max(n, 1) ** 2
        s = int(np.argmin(cost))
        assigned[c] = s
        have[s] += unit
        size[s] += k
    out = frame.copy()
    out[split_col] = [names[assigned[c]] for c in comp]
    return out


def remaining_leaks(result: AuditResult, frame: pd.DataFrame, split_col: str | None = None) -> dict:
    """What `result`'s pairs and groups would leak under the splits of `frame` (same rows, e.g. `fix_splits`'s)."""
    splits = _cells(frame, split_col or result.columns["split"])
    pairs = sum(splits[a] != splits[b] and MISSING not in (splits[a], splits[b]) for a, b in result.pair_positions())
    groups = len(_group_leaks(frame, splits, result.columns["groups"]))
    return {"cross_split_pairs": int(pairs), "group_leaks": groups}
