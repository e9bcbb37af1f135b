"""Subgroup (fairness) analysis: per-group metrics with CIs, worst group, largest gap, fairness gaps.

The metrics come from :mod:`panderm.metrics`' weighted engine, so a group's value is exactly what
``classification_metrics`` gives on that group's rows (AUROC one-vs-rest macro over the classes present in the
group, macro F1 over the classes seen in the group's labels or predictions, as scikit-learn's defaults), and a
bootstrap replicate is a weight vector over the group's rows.

Resampling is stratified by group: every replicate resamples each group within itself, keeping its size, so a
small group never borrows rows from a large one and the gap between two groups is the difference of two
independent resamples. For one column, ``numpy.random.RandomState(seed)`` draws the groups in report order,
replicate ``b`` of a group of ``n`` rows being row ``b`` of ``rs.randint(0, n, size=(n_resamples, n))``. The gap
CI is built from the very replicates of the two groups' own CIs.

Groups smaller than ``min_group`` are reported with their metrics but flagged ``small`` and left out of the
worst group, the largest gap and the fairness differences: a 1-image group would otherwise be the worst group
(or the best) by chance.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..metrics import _compute, _prepare, _resolve_metrics
from ..validation import check_int

__all__ = ["bin_column", "parse_bins", "subgroup_report", "subgroup_frame", "subgroup_figure", "MISSING"]

#: Label of the rows whose group value is absent (NaN, None, empty) or outside every bin.
MISSING = "missing"

DEFAULT_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")

# Cells of one [replicates, rows] weight block (~16 MB of float64), as in panderm.metrics.
_CHUNK_CELLS = 2_000_000

_SPEC_RE = re.compile(r"^\s*([^=]+?)\s*=\s*(.*)$")


# --------------------------------------------------------------------------- #
# Bins
# --------------------------------------------------------------------------- #
def _check_edges(edges: Any, column: str | None = None) -> list[float]:
    where = f" for {column!r}" if column is not None else ""
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence) and not isinstance(edges, np.ndarray):
        raise DataError(f"bin edges{where} must be a list of numbers, got {edges!r}", param="bins")
    out = []
    for e in edges:
        try:
            v = float(e)
        except (TypeError, ValueError):
            raise DataError(f"bin edge {e!r}{where} is not a number", param="bins") from None
        if math.isnan(v):
            raise DataError(f"bin edge{where} is NaN", param="bins")
        out.append(v)
    if len(out) < 2:
        raise DataError(f"bins{where} need at least 2 edges to make one bin, got {len(out)}", param="bins")
    for a, b in zip(out, out[1:]):
        if not b > a:
            raise DataError(f"bin edges{where} must be strictly increasing, got {_fmt_edge(a)} then {_fmt_edge(b)}",
                            param="bins")
    return out


def _fmt_edge(x: float) -> str:
    if math.isfinite(x) and x == int(x):
        return str(int(x))
    return repr(float(x))  # shortest round-trip: 2.5 -> '2.5', inf -> 'inf'


def _blank(values: pd.Series) -> np.ndarray:
    """Rows with no value: NaN/None/NA or a string of only whitespace."""
    na = values.isna().to_numpy()
    text = np.array([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    return na | text


def bin_column(values: pd.Series, edges: Sequence[float]) -> pd.Series:
    """Left-closed bin labels such as ``"[40, 60)"`` for a numeric column.

    Every bin is ``[edges[i], edges[i+1])``, the last one included, so a value equal to the last edge falls
    outside. Values outside all bins and absent values become ``"missing"``; a value that is not a number is a
    :class:`DataError` rather than a silent "missing".
    """
    values = values if isinstance(values, pd.Series) else pd.Series(values)
    name = None if values.name is None else str(values.name)
    e = np.asarray(_check_edges(edges, name))
    blank = _blank(values)
    numeric = pd.to_numeric(values.where(~blank), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~blank & np.isnan(numeric)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"column {name or '(unnamed)'!r} has {values.iloc[i]!r} at row {i}, not a number: "
                        f"it cannot be binned", param="bins")
    # searchsorted(side="right") - 1 is the i with e[i] <= v < e[i+1]: left-closed, right-open.
    pos = np.searchsorted(e, np.where(np.isnan(numeric), -np.inf, numeric), side="right") - 1
    inside = ~np.isnan(numeric) & (pos >= 0) & (pos < len(e) - 1)
    names = [f"[{_fmt_edge(a)}, {_fmt_edge(b)})" for a, b in zip(e[:-1], e[1:])]
    labels = [names[p] if ok else MISSING for p, ok in zip(pos, inside)]
    return pd.Series(labels, index=values.index, name=values.name, dtype=object)


def parse_bins(specs: Sequence[str]) -> dict[str, list[float]]:
    """``["age=0,40,60,120"]`` -> ``{"age": [0.0, 40.0, 60.0, 120.0]}`` (the bins setting)."""
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, list[float]] = {}
    for spec in specs or ():
        m = _SPEC_RE.match(str(spec))
        if m is None or not m.group(1):
            raise DataError(f"bins {spec!r} must look like COLUMN=E0,E1,... (e.g. age=0,40,60,120)", param="bins")
        col, rest = m.group(1), m.group(2)
        if col in out:
            raise DataError(f"bins for {col!r} given twice", param="bins")
        parts = [p.strip() for p in rest.split(",")]
        edges = []
        for p in parts:
            try:
                edges.append(float(p))
            except ValueError:
                raise DataError(f"bins {spec!r}: edge {p!r} is not a number", param="bins") from None
        out[col] = _check_edges(edges, col)
    return out


# --------------------------------------------------------------------------- #
# Group labels
# --------------------------------------------------------------------------- #
def _label(v: Any) -> str:
    # A Fitzpatrick column with gaps is read as float: type 2 should read "2", not "2.0".
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v) == int(v):
        return str(int(v))
    if isinstance(v, (np.integer, np.bool_)):
        return str(v.item())
    return str(v)


def _group_labels(values: pd.Series, edges: list[float] | None) -> tuple[np.ndarray, list[str]]:
    """Per-row group label and the groups in report order (bin order, else numeric or text order; missing last)."""
    if edges is not None:
        labels = bin_column(values, edges).to_numpy(dtype=object)
        order = [f"[{_fmt_edge(a)}, {_fmt_edge(b)})" for a, b in zip(edges[:-1], edges[1:])]
        present = set(labels)
        groups = [g for g in order if g in present]
    else:
        blank = _blank(values)
        raw = values.to_numpy(dtype=object)
        labels = np.array([MISSING if b else _label(v) for v, b in zip(raw, blank)], dtype=object)
        firsts: dict[str, Any] = {}
        for v, lab, b in zip(raw, labels, blank):
            if not b:
                firsts.setdefault(lab, v)
        keys = list(firsts)
        try:
            nums = [float(firsts[k]) for k in keys]
            if any(math.isnan(x) for x in nums):
                raise ValueError
            groups = [k for _, k in sorted(zip(nums, keys), key=lambda t: t[0])]
        except (TypeError, ValueError):
            groups = sorted(keys)
        groups = [g for g in groups if g != MISSING]
    if (labels == MISSING).any():
        groups.append(MISSING)
    return labels, groups


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def _num(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _ci(samples: np.ndarray) -> list[float] | None:
    s = samples[~np.isnan(samples)]
    if s.size == 0:
        return None
    lo, hi = np.percentile(s, [2.5, 97.5])
    return [float(lo), float(hi)]


def _replicates(names: list[str], y: np.ndarray, p: np.ndarray, pred: np.ndarray, n_resamples: int,
                rs: np.random.RandomState) -> dict[str, np.ndarray]:
    """Metric values of every replicate of one group (nan where undefined), in draw order."""
    n = len(y)
    out = {m: np.empty(n_resamples) for m in names}
    chunk = max(1, _CHUNK_CELLS // max(n, p.shape[1] ** 2))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        # Drawing the rows chunk by chunk continues one stream: the same numbers as a single (R, n) draw.
        idx = rs.randint(0, n, size=(b, n))
        W = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        vals = _compute(names, y, p, pred, W.astype(np.float64), "ovr")
        for m in names:
            out[m][start:start + b] = vals[m]
    return out


def _binary_fairness(y: np.ndarray, pred: np.ndarray, rows: dict[str, np.ndarray], positive: str) -> dict:
    tpr, fpr, rate = {}, {}, {}
    for g, idx in rows.items():
        yg, pg = y[idx], pred[idx] == 1
        pos, neg = yg == 1, yg == 0
        tpr[g] = _num(pg[pos].mean()) if pos.any() else None
        fpr[g] = _num(pg[neg].mean()) if neg.any() else None
        rate[g] = _num(pg.mean())

    def spread(d: dict) -> float | None:
        v = [x for x in d.values() if x is not None]
        return float(max(v) - min(v)) if len(v) >= 2 else None

    tpr_gap, fpr_gap = spread(tpr), spread(fpr)
    gaps = [x for x in (tpr_gap, fpr_gap) if x is not None]
    return {
        "positive_class": positive,
        "groups": list(rows),
        "tpr": tpr,
        "fpr": fpr,
        "positive_rate": rate,
        "tpr_difference": tpr_gap,
        "fpr_difference": fpr_gap,
        "equalized_odds_difference": max(gaps) if gaps else None,
        "demographic_parity_difference": spread(rate),
    }


def subgroup_report(
    y,
    probs,
    groups: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    bins: dict[str, list[float]] | None = None,
    min_group: int = 30,
    n_resamples: int = 1000,
    seed: int = 42,
    classnames=None,
) -> dict:
    """Per-group metrics, worst group, largest gap and (binary) fairness gaps for every column of `groups`.

    `groups` has one column per grouping variable, its rows aligned with `y` / `probs`; columns named in `bins`
    are binned with :func:`bin_column`. Absent values form the group ``"missing"``. Predictions are the argmax
    of `probs`; for binary tasks class 1 is the positive class. ``n_resamples=0`` skips the bootstrap (every
    CI is None). The result is JSON-safe (undefined values are None); see docs/ANALYSIS.md for its layout.
    """
    y, p, pred = _prepare(y, probs, None, "ovr")
    n, k = p.shape
    names = _resolve_metrics(metrics, k)
    min_group = check_int(min_group, "min_group", 1, param="min_group")
    n_resamples = check_int(n_resamples, "n_resamples", 0, param="n_resamples")
    if isinstance(groups, pd.Series):
        groups = groups.to_frame(name=groups.name if groups.name is not None else "group")
    if not isinstance(groups, pd.DataFrame):
        raise DataError(f"groups must be a pandas DataFrame with one column per grouping variable, "
                        f"got {type(groups).__name__}", param="group_col")
    if groups.shape[1] == 0:
        raise DataError("groups has no columns: name at least one group column", param="group_col")
    if not groups.columns.is_unique:
        dup = sorted({str(c) for c in groups.columns[groups.columns.duplicated()]})
        raise DataError(f"groups has column {', '.join(dup)} more than once", param="group_col")
    if len(groups) != n:
        raise DataError(f"groups has {len(groups)} rows but there are {n} labels and predictions", param="group_col")
    available = [str(c) for c in groups.columns]
    bins = dict(bins or {})
    for col in bins:
        if col not in groups.columns:
            raise DataError(f"bins given for column {col!r}, which is not among the group columns "
                            f"(available: {', '.join(available)})", param="bins")
    bins = {col: _check_edges(e, str(col)) for col, e in bins.items()}
    if classnames is None:
        cls = [str(i) for i in range(k)]
    else:
        cls = [str(c) for c in classnames]
        if len(cls) != k:
            raise DataError(f"classnames has {len(cls)} names but probs has {k} class columns", param="classnames")
        if len(set(cls)) != k:
            raise DataError(f"classnames repeats a name: {cls}", param="classnames")

    columns: dict[str, Any] = {}
    for col in groups.columns:
        labels, order = _group_labels(groups[col].reset_index(drop=True), bins.get(col))
        rows = {g: np.flatnonzero(labels == g) for g in order}
        rs = np.random.RandomState(seed)  # per column: a column's CIs do not depend on the other columns asked for
        entries, reps = [], {}
        for g in order:
            idx = rows[g]
            yg, pg, predg = y[idx], p[idx], pred[idx]
            point = _compute(names, yg, pg, predg, np.ones((1, len(idx))), "ovr")
            values = {m: _num(point[m][0]) for m in names}
            if n_resamples:
                reps[g] = _replicates(names, yg, pg, predg, n_resamples, rs)
                ci = {m: (_ci(reps[g][m]) if values[m] is not None else None) for m in names}
            else:
                ci = {m: None for m in names}
            counts = np.bincount(yg, minlength=k)
            entries.append({
                "group": g,
                "n": int(len(idx)),
                "small": bool(len(idx) < min_group),
                "class_counts": {c: int(v) for c, v in zip(cls, counts)},
                "metrics": values,
                "ci": ci,
            })

        eligible = [e for e in entries if not e["small"]]
        worst, gap = {}, {}
        for m in names:
            defined = [e for e in eligible if e["metrics"][m] is not None]
            if not defined:
                worst[m] = gap[m] = None
                continue
            # Every panderm metric is higher-is-better; ties keep report order.
            lo = min(defined, key=lambda e: e["metrics"][m])
            worst[m] = {"group": lo["group"], "value": lo["metrics"][m]}
            if len(defined) < 2:
                gap[m] = None
                continue
            # Chosen among the other groups so that a tie everywhere still names two groups (gap 0).
            hi = max((e for e in defined if e is not lo), key=lambda e: e["metrics"][m])
            diff_ci = None
            if n_resamples:
                diff_ci = _ci(reps[hi["group"]][m] - reps[lo["group"]][m])
            gap[m] = {"groups": [hi["group"], lo["group"]],
                      "gap": float(hi["metrics"][m] - lo["metrics"][m]), "ci": diff_ci}

        fairness = None
        if k == 2:
            fairness = _binary_fairness(y, pred, {e["group"]: rows[e["group"]] for e in eligible}, cls[1])
        key = str(col)
        columns[key] = {
            "binned": bins.get(col),
            "groups": entries,
            "worst_group": worst,
            "largest_gap": gap,
            "fairness": fairness,
        }
    return {
        "columns": columns,
        "metrics": list(names),
        "classnames": cls,
        "min_group": min_group,
        "n_resamples": n_resamples,
        "seed": int(seed),
        "auroc_multi_class": "ovr",
    }


# --------------------------------------------------------------------------- #
# Table and figure
# --------------------------------------------------------------------------- #
FRAME_COLUMNS = ["column", "group", "n", "small", "metric", "value", "ci_low", "ci_high"]


def _columns_of(report: Any) -> Mapping:
    if not isinstance(report, Mapping) or not isinstance(report.get("columns"), Mapping):
        raise DataError("not a subgroup report: expected the dict subgroup_report returns")
    return report["columns"]


def subgroup_frame(report) -> pd.DataFrame:
    """One row per (column, group, metric): the ``subgroups.csv`` table (undefined values are NaN)."""
    rows = []
    for col, entry in _columns_of(report).items():
        for g in entry["groups"]:
            for m, v in g["metrics"].items():
                ci = g["ci"].get(m)
                rows.append({
                    "column": col, "group": g["group"], "n": g["n"], "small": g["small"], "metric": m,
                    "value": np.nan if v is None else v,
                    "ci_low": np.nan if ci is None else ci[0],
                    "ci_high": np.nan if ci is None else ci[1],
                })
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def subgroup_figure(report, metric: str):
    """`metric` with its 95% CI per group, one panel per group column; small groups drawn hollow and grey."""
    from matplotlib.figure import Figure

    cols = _columns_of(report)
    known = list(report.get("metrics") or [])
    if metric not in known:
        raise DataError(f"metric {metric!r} is not in this subgroup report (it has: {', '.join(known) or 'none'})")
    widths = [max(2.5, 0.6 * len(e["groups"]) + 1.0) for e in cols.values()] or [3.0]
    fig = Figure(figsize=(min(sum(widths), 24.0), 3.6))
    axes = fig.subplots(1, max(1, len(cols)), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    for ax, (col, entry) in zip(axes, cols.items()):
        groups = entry["groups"]
        ticks = [f"{g['group']}\n(n={g['n']})" for g in groups]
        for x, g in enumerate(groups):
            v = g["metrics"].get(metric)
            if v is None:
                ax.annotate("n/a", (x, 0.02), ha="center", fontsize=7, color="0.5", xycoords=("data", "axes fraction"))
                continue
            ci = g["ci"].get(metric)
            yerr = None if ci is None else [[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]]
            color = "0.6" if g["small"] else "C0"
            ax.errorbar([x], [v], yerr=yerr, fmt="o", color=color, capsize=3,
                        markerfacecolor="white" if g["small"] else color)
        worst = (entry.get("worst_group") or {}).get(metric)
        if worst is not None:
            ax.axhline(worst["value"], color="C3", lw=0.8, ls="--")
        ax.set_xticks(range(len(groups)))
        crowded = len(groups) > 6
        ax.set_xticklabels(ticks, fontsize=7, rotation=45 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlim(-0.6, max(len(groups) - 0.4, 0.6))
        ax.set_title(str(col), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(metric)
    fig.suptitle(f"{metric} by subgroup (95% CI; hollow = fewer than {report.get('min_group')} images; "
                 f"dashed = worst group)", fontsize=9)
    fig.tight_layout()
    return fig
