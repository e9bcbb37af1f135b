"""Leaderboard and paired significance tests over panderm run folders (`panderm compare`).

:func:`compare_runs` reads run folders (:func:`panderm.analysis.runs.load_run`), groups what they evaluated
into *benchmarks* (task + dataset, and for the linear probe the training setting and seed), and writes:

- ``leaderboard.md`` / ``.csv`` / ``.html``: one row per model, one column per benchmark and metric with its
  95% bootstrap CI, and the rank;
- ``pairwise.csv``: for every pair of models evaluated on the same images of a benchmark and every metric,
  the paired bootstrap difference (same resampled images for both models) with its 95% CI and p-value,
  DeLong's test for AUROC, and both p-values Holm-adjusted across the benchmarks of that model pair and
  metric;
- ``results.json`` (all of it, with the inputs and settings) and ``plots/``: each metric with its CI per
  model and benchmark, and the linear-probe label-efficiency curves (percent or shots vs metric, mean ± std
  over seeds, from each run's ``summary``).

Every metric is recomputed from the predictions files with one definition (:mod:`panderm.metrics`, AUROC as
macro one-vs-rest), so runs of different tasks and versions are scored alike; the numbers can differ from a
run's own results.json where that task reports another AUROC flavour (the linear probe's OvO).
"""
from __future__ import annotations

import hashlib
import html
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError
from .runs import RunPredictions, find_runs, is_run_dir, load_run

log = logging.getLogger("panderm.compare")

__all__ = ["CompareResult", "compare_runs", "safe_name", "DEFAULT_METRICS", "collect_runs", "input_signature"]

DEFAULT_METRICS = ("balanced_accuracy", "auroc", "accuracy")
LP_SETTINGS = ("primary", "all")


def safe_name(name: str, max_len: int = 80) -> str:
    """A folder / file name for `name`: characters other than letters, digits, '.', '_', '-' become '_'
    (so ``local-dir:/m/a`` and ``hf-hub:org/name`` are safe); long names are cut and get a short hash."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    text = re.sub(r"_+", "_", text) or "x"
    if len(text) > max_len:
        digest = hashlib.sha1(str(name).encode("utf-8")).hexdigest()[:6]
        text = f"{text[:max_len - 7]}_{digest}"
    return text


@dataclass
class CompareResult:
    """What :func:`compare_runs` computed and wrote."""

    out_dir: Path
    models: list[str]
    benchmarks: list[str]
    metrics: list[str]
    leaderboard: list[dict]
    pairwise: list[dict]
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table_rows(self, max_columns: int = 8) -> list[dict]:
        """Leaderboard rows for the terminal: rank, model and each benchmark metric's value (no CI)."""
        rows = []
        for entry in self.leaderboard:
            row = {"rank": entry["rank"], "model": entry["model"]}
            for col in self.columns()[:max_columns]:
                cell = entry["cells"].get(col)
                row[col] = cell["value"] if cell else math.nan
            rows.append(row)
        return rows

    def columns(self) -> list[str]:
        return [f"{b} {m}" for b in self.benchmarks for m in self.metrics]

    def n_significant(self, alpha: float = 0.05) -> int:
        return sum(1 for r in self.pairwise if r.get("p_holm") is not None and r["p_holm"] < alpha)


# --------------------------------------------------------------------------- #
# Loading and grouping
# --------------------------------------------------------------------------- #
def collect_runs(run_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders from `run_dirs`: each a run folder, or a folder holding run folders below it."""
    found: list[Path] = []
    seen: set[str] = set()
    for given in run_dirs:
        path = Path(given)
        if not path.exists():
            raise DataError(f"run folder not found: {path}")
        if is_run_dir(path):
            dirs = [path]
        elif path.is_dir():
            dirs = find_runs(path)
            if not dirs:
                raise DataError(f"{path} holds no panderm classification run (no results.json of zeroshot, "
                                "linear-probe, finetune or multimodal at or below it)")
        else:
            raise DataError(f"{path} is not a folder: give run folders (each with a results.json)")
        for d in dirs:
            key = str(d.resolve())
            if key not in seen:
                seen.add(key)
                found.append(d)
    if not found:
        raise DataError("no run folders given")
    return found


def _sweep_dataset_names(run_dirs) -> dict[str, str]:
    """Dataset names of the linear-probe / finetune cells of any sweep folder given (its sweep.json)."""
    import json

    names = {}
    for given in run_dirs:
        record = Path(given) / "sweep.json"
        if not record.is_file():
            continue
        try:
            cells = json.loads(record.read_text(encoding="utf-8")).get("cells") or []
        except (OSError, ValueError, AttributeError):
            continue
        for cell in cells:
            if isinstance(cell, dict) and cell.get("path") and cell.get("task") != "zeroshot":
                names[str((Path(given) / cell["path"]).resolve())] = str(cell.get("dataset"))
    return names


def input_signature(run_dirs: Sequence[Path]) -> list[dict]:
    """Each run folder with the sha256 of its results file: what a leaderboard was computed from."""
    from ..data.tables import file_sha256

    out = []
    for d in run_dirs:
        res = d / "results.json" if (d / "results.json").is_file() else d / "results_test.json"
        out.append({"run_dir": str(d), "results_sha256": file_sha256(res) if res.is_file() else None})
    return out


def _label_models(items: list[RunPredictions]) -> dict[int, str]:
    """Display names: the model id, with the fingerprint appended where one id has several weights."""
    fps: dict[str, set] = {}
    for it in items:
        fps.setdefault(it.model, set()).add(it.fingerprint)
    names = {}
    for i, it in enumerate(items):
        if len(fps[it.model]) > 1 and it.fingerprint:
            names[i] = f"{it.model}@{str(it.fingerprint)[:8]}"
        else:
            names[i] = it.model
    return names


def _primary_lp(items: list[RunPredictions]) -> list[RunPredictions]:
    """Of each linear-probe run folder, only the largest setting (most data) at its lowest seed."""
    best: dict[str, tuple[float, int]] = {}
    for it in items:
        if it.task != "linear-probe":
            continue
        value = float(it.setting.split("_", 1)[1])
        key = str(it.run_dir)
        cand = (value, -int(it.seed))
        if key not in best or cand > best[key]:
            best[key] = cand
    out = []
    for it in items:
        if it.task == "linear-probe":
            value, neg_seed = best[str(it.run_dir)]
            if float(it.setting.split("_", 1)[1]) != value or int(it.seed) != -neg_seed:
                continue
        out.append(it)
    return out


def _align(ref: RunPredictions, other: RunPredictions, bench: str) -> RunPredictions:
    """`other` in `ref`'s row order, or a DataError when the two were not evaluated on the same images."""

    def refuse(detail: str) -> DataError:
        return DataError(f"{bench}: {ref.run_dir} and {other.run_dir} were evaluated on different images "
                         f"({detail}); a paired comparison needs the same test set")

    if other.n != ref.n:
        raise refuse(f"{ref.n} vs {other.n} images")
    if other.probs.shape[1] != ref.probs.shape[1]:
        raise DataError(f"{bench}: {ref.run_dir} has {ref.probs.shape[1]} classes and {other.run_dir} "
                        f"{other.probs.shape[1]}; a paired comparison needs the same classes")
    if other.image_paths != ref.image_paths:
        pos = {p: i for i, p in enumerate(other.image_paths)}
        if len(pos) == other.n and len(set(ref.image_paths)) == ref.n and set(pos) == set(ref.image_paths):
            order = np.array([pos[p] for p in ref.image_paths])
            other = RunPredictions(**{**other.__dict__, "labels": other.labels[order], "probs": other.probs[order],
                                      "image_paths": list(ref.image_paths)})
        else:
            row = next(i for i, (a, b) in enumerate(zip(ref.image_paths, other.image_paths)) if a != b)
            raise refuse(f"row {row + 1}: {ref.image_paths[row]!r} vs {other.image_paths[row]!r}")
    if not np.array_equal(other.labels, ref.labels):
        row = int(np.flatnonzero(other.labels != ref.labels)[0])
        raise refuse(f"labels differ, first at {ref.image_paths[row]!r}: {ref.labels[row]} vs {other.labels[row]}")
    return other


def _group(items: list[RunPredictions], names: dict[int, str]) -> dict[str, dict[str, RunPredictions]]:
    """benchmark -> model name -> predictions (aligned to the first run's rows); refuses duplicates and
    runs of one benchmark on different images."""
    groups: dict[str, dict[str, RunPredictions]] = {}
    for i, it in enumerate(items):
        bench, model = it.benchmark, names[i]
        group = groups.setdefault(bench, {})
        if model in group:
            raise DataError(f"{bench}: model {model} has two runs, {group[model].run_dir} and {it.run_dir}; "
                            "give one of them")
        if group:
            ref = next(iter(group.values()))
            it = _align(ref, it, bench)
        group[model] = it
    return groups


# --------------------------------------------------------------------------- #
# Computation
# --------------------------------------------------------------------------- #
def _cell(it: RunPredictions, metrics: list[str], n_resamples: int, seed: int, multi_class: str) -> dict:
    from ..metrics import bootstrap_ci, classification_metrics

    if n_resamples > 0:
        ci = bootstrap_ci(it.labels, it.probs, metrics, n_resamples=n_resamples, seed=seed, multi_class=multi_class)
        return {m: {"value": ci[m]["value"], "ci_low": ci[m]["ci_low"], "ci_high": ci[m]["ci_high"]} for m in metrics}
    values = classification_metrics(it.labels, it.probs, metrics, multi_class)
    return {m: {"value": values[m], "ci_low": math.nan, "ci_high": math.nan} for m in metrics}


def _rank(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 = highest value (ties share the best rank); nan values get no rank."""
    ok = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    ranked = {}
    for k, v in ok.items():
        ranked[k] = 1 + sum(1 for w in ok.values() if w > v)
    return ranked


def _leaderboard(groups, models, metrics, n_resamples, seed, multi_class) -> list[dict]:
    cells: dict[str, dict[str, dict]] = {m: {} for m in models}
    col_ranks: dict[str, dict[str, float]] = {}
    for bench, group in groups.items():
        for model, it in group.items():
            vals = _cell(it, metrics, n_resamples, seed, multi_class)
            for metric in metrics:
                cells[model][f"{bench} {metric}"] = dict(vals[metric], n=it.n, run_dir=str(it.run_dir))
        for metric in metrics:
            col = f"{bench} {metric}"
            col_ranks[col] = _rank({m: cells[m][col]["value"] for m in group})
    primary = metrics[0]
    rows = []
    for model in models:
        prim = [col_ranks[c][model] for c in col_ranks if c.endswith(f" {primary}") and model in col_ranks[c]]
        every = [r[model] for r in col_ranks.values() if model in r]
        for col, cell in cells[model].items():
            cell["rank"] = col_ranks[col].get(model)
        rows.append({"model": model, "mean_rank": float(np.mean(prim)) if prim else math.nan,
                     "mean_rank_all_metrics": float(np.mean(every)) if every else math.nan,
                     "n_benchmarks": sum(1 for g in groups.values() if model in g), "cells": cells[model]})

    def key(r):
        return (math.inf if math.isnan(r["mean_rank"]) else r["mean_rank"],
                math.inf if math.isnan(r["mean_rank_all_metrics"]) else r["mean_rank_all_metrics"], r["model"])

    rows.sort(key=key)
    for i, r in enumerate(rows):
        same = i > 0 and key(rows[i - 1])[:2] == key(r)[:2]
        r["rank"] = rows[i - 1]["rank"] if same else i + 1
    return rows


def _pairwise(groups, order, metrics, n_resamples, seed, multi_class) -> list[dict]:
    from .stats import delong_multiclass, holm, paired_bootstrap

    rows = []
    rank = {m: i for i, m in enumerate(order)}
    for bench, group in groups.items():
        present = sorted(group, key=lambda m: rank[m])
        for i, ma in enumerate(present):
            for mb in present[i + 1:]:
                a, b = group[ma], group[mb]
                for metric in metrics:
                    row = {"benchmark": bench, "task": a.task, "dataset": a.dataset, "setting": a.setting,
                           "seed": a.seed, "metric": metric, "model_a": ma, "model_b": mb, "n": a.n}
                    if n_resamples > 0:
                        r = paired_bootstrap(a.labels, a.probs, b.probs, metric, n_resamples=n_resamples, seed=seed,
                                             multi_class=multi_class)
                        row.update(a=r["a"], b=r["b"], diff=r["diff"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                                   p_value=r["p_value"], n_resamples=r["n_resamples"])
                    else:
                        from ..metrics import classification_metrics

                        va = classification_metrics(a.labels, a.probs, [metric], multi_class)[metric]
                        vb = classification_metrics(b.labels, b.probs, [metric], multi_class)[metric]
                        row.update(a=va, b=vb, diff=va - vb, ci_low=math.nan, ci_high=math.nan, p_value=math.nan,
                                   n_resamples=0)
                    if metric == "auroc":
                        d = delong_multiclass(a.labels, a.probs, b.probs)
                        row.update(delong_method=d["method"], delong_diff=d["diff"], delong_z=d["z"],
                                   delong_p=d["p_value"])
                    rows.append(row)
    # Holm across the benchmarks of each (model pair, metric).
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        families.setdefault((r["model_a"], r["model_b"], r["metric"]), []).append(i)
    for idx in families.values():
        for src, dst in (("p_value", "p_holm"), ("delong_p", "delong_p_holm")):
            if src not in rows[idx[0]]:
                continue
            adjusted = holm([rows[i].get(src, math.nan) for i in idx])
            for i, p in zip(idx, adjusted):
                rows[i][dst] = float(p)
    return rows


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #
def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _cell_text(cell: dict | None) -> str:
    if not cell:
        return "–"
    if math.isnan(cell["ci_low"]):
        return _fmt(cell["value"])
    return f"{_fmt(cell['value'])} ({_fmt(cell['ci_low'])}–{_fmt(cell['ci_high'])})"


def _leaderboard_frame(result: CompareResult):
    import pandas as pd

    records = []
    for r in result.leaderboard:
        rec = {"rank": r["rank"], "model": r["model"], "mean_rank": r["mean_rank"],
               "mean_rank_all_metrics": r["mean_rank_all_metrics"], "n_benchmarks": r["n_benchmarks"]}
        for col in result.columns():
            cell = r["cells"].get(col)
            rec[col] = cell["value"] if cell else math.nan
            rec[f"{col} ci_low"] = cell["ci_low"] if cell else math.nan
            rec[f"{col} ci_high"] = cell["ci_high"] if cell else math.nan
            rec[f"{col} rank"] = cell["rank"] if cell and cell.get("rank") is not None else math.nan
        records.append(rec)
    return pd.DataFrame(records)


PAIRWISE_COLUMNS = ("benchmark", "task", "dataset", "setting", "seed", "metric", "model_a", "model_b", "n", "a", "b",
                    "diff", "ci_low", "ci_high", "p_value", "p_holm", "n_resamples", "delong_method", "delong_diff",
                    "delong_z", "delong_p", "delong_p_holm")


def _pairwise_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame([{c: r.get(c) for c in PAIRWISE_COLUMNS} for r in rows], columns=list(PAIRWISE_COLUMNS))


def _markdown(result: CompareResult, settings: dict) -> str:
    primary = result.metrics[0]
    lines = ["# Model comparison", "",
             f"{len(result.models)} models, {len(result.benchmarks)} benchmarks. Cells: value (95% bootstrap CI, "
             f"{settings['n_resamples']} resamples, seed {settings['seed']}). Rank: mean rank over the benchmarks "
             f"on {primary} (1 = best).", ""]
    for note in result.notes:
        lines.append(f"> {note}")
    if result.notes:
        lines.append("")
    for bench in result.benchmarks:
        cols = [f"{bench} {m}" for m in result.metrics]
        lines.append(f"## {bench}")
        lines.append("")
        lines.append("| rank | model | " + " | ".join(result.metrics) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for r in result.leaderboard:
            if not any(c in r["cells"] for c in cols):
                continue
            lines.append(f"| {r['rank']} | {r['model']} | " + " | ".join(_cell_text(r["cells"].get(c)) for c in cols)
                         + " |")
        lines.append("")
    lines += ["## Leaderboard", "", "| rank | model | mean rank | benchmarks | "
              + " | ".join(result.columns()) + " |", "|---|---|---|---|" + "---|" * len(result.columns())]
    for r in result.leaderboard:
        lines.append(f"| {r['rank']} | {r['model']} | {_fmt(r['mean_rank'], 2)} | {r['n_benchmarks']} | "
                     + " | ".join(_cell_text(r["cells"].get(c)) for c in result.columns()) + " |")
    lines += ["", "## Paired comparisons", ""]
    if not result.pairwise:
        lines.append("No benchmark was evaluated by two models: nothing to compare pairwise.")
    else:
        lines += ["diff = A - B on the same images; CI and p from the paired bootstrap; p (Holm): adjusted across "
                  "the benchmarks of the model pair and metric; DeLong for AUROC (multi-class: one-vs-rest per "
                  "class, Holm over the classes).", "",
                  "| benchmark | metric | A | B | diff (95% CI) | p | p (Holm) | DeLong p (Holm) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result.pairwise:
            delong = f"{_fmt_p(r.get('delong_p'))} ({_fmt_p(r.get('delong_p_holm'))})" if "delong_p" in r else "–"
            lines.append(f"| {r['benchmark']} | {r['metric']} | {r['model_a']} | {r['model_b']} | "
                         f"{_fmt(r['diff'])} ({_fmt(r['ci_low'])}–{_fmt(r['ci_high'])}) | {_fmt_p(r['p_value'])} | "
                         f"{_fmt_p(r.get('p_holm'))} | {delong} |")
    plots = [p for k, p in result.files.items() if k.startswith("plot:")]
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            rel = p.relative_to(result.out_dir).as_posix()
            lines.append(f"![{rel}]({rel})")
    return "\n".join(lines) + "\n"


def _html(result: CompareResult, settings: dict) -> str:
    e = html.escape
    primary = result.metrics[0]
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>panderm compare</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.l,th.l{text-align:left}"
             ".best{font-weight:bold}.sig{background:#e8f4e8}img{max-width:900px;display:block;margin:1em 0}"
             "</style></head><body>", "<h1>Model comparison</h1>",
             f"<p>{len(result.models)} models, {len(result.benchmarks)} benchmarks. Cells: value (95% bootstrap CI, "
             f"{settings['n_resamples']} resamples, seed {settings['seed']}). Rank: mean rank over the benchmarks on "
             f"{e(primary)} (1 = best).</p>"]
    for note in result.notes:
        parts.append(f"<p><em>{e(note)}</em></p>")
    parts.append("<h2>Leaderboard</h2><table><tr><th>rank</th><th class='l'>model</th><th>mean rank</th>"
                 "<th>benchmarks</th>" + "".join(f"<th>{e(c)}</th>" for c in result.columns()) + "</tr>")
    for r in result.leaderboard:
        tds = []
        for c in result.columns():
            cell = r["cells"].get(c)
            cls = " class='best'" if cell and cell.get("rank") == 1 else ""
            tds.append(f"<td{cls}>{e(_cell_text(cell))}</td>")
        parts.append(f"<tr><td>{r['rank']}</td><td class='l'>{e(r['model'])}</td><td>{_fmt(r['mean_rank'], 2)}</td>"
                     f"<td>{r['n_benchmarks']}</td>" + "".join(tds) + "</tr>")
    parts.append("</table><h2>Paired comparisons</h2>")
    if not result.pairwise:
        parts.append("<p>No benchmark was evaluated by two models: nothing to compare pairwise.</p>")
    else:
        parts.append("<p>diff = A - B on the same images; CI and p from the paired bootstrap; Holm across the "
                     "benchmarks of each model pair and metric; DeLong for AUROC. Shaded: Holm p &lt; 0.05.</p>")
        parts.append("<table><tr><th class='l'>benchmark</th><th class='l'>metric</th><th class='l'>A</th>"
                     "<th class='l'>B</th><th>diff</th><th>95% CI</th><th>p</th><th>p (Holm)</th><th>DeLong p</th>"
                     "<th>DeLong p (Holm)</th></tr>")
        for r in result.pairwise:
            sig = r.get("p_holm") is not None and not math.isnan(r["p_holm"]) and r["p_holm"] < 0.05
            parts.append(f"<tr{' class=sig' if sig else ''}><td class='l'>{e(r['benchmark'])}</td>"
                         f"<td class='l'>{e(r['metric'])}</td><td class='l'>{e(r['model_a'])}</td>"
                         f"<td class='l'>{e(r['model_b'])}</td><td>{_fmt(r['diff'])}</td>"
                         f"<td>{_fmt(r['ci_low'])} – {_fmt(r['ci_high'])}</td><td>{_fmt_p(r['p_value'])}</td>"
                         f"<td>{_fmt_p(r.get('p_holm'))}</td><td>{_fmt_p(r.get('delong_p'))}</td>"
                         f"<td>{_fmt_p(r.get('delong_p_holm'))}</td></tr>")
        parts.append("</table>")
    plots = [p for k, p in result.files.items() if k.startswith("plot:")]
    if plots:
        parts.append("<h2>Plots</h2>")
        for p in plots:
            rel = p.relative_to(result.out_dir).as_posix()
            parts.append(f"<img src='{e(rel)}' alt='{e(rel)}'>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _metric_plot(result: CompareResult, metric: str):
    from ..report import subplots

    benches = result.benchmarks
    models = [r["model"] for r in result.leaderboard]
    fig, ax = subplots(figsize=(max(5.0, 1.2 + 1.1 * len(benches) * max(1, len(models)) ** 0.5), 4.2))
    width = 0.8 / max(1, len(models))
    for j, row in enumerate(result.leaderboard):
        xs, ys, lo, hi = [], [], [], []
        for i, b in enumerate(benches):
            cell = row["cells"].get(f"{b} {metric}")
            if not cell or cell["value"] is None or math.isnan(cell["value"]):
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell["value"])
            l, h = cell["ci_low"], cell["ci_high"]
            lo.append(0.0 if math.isnan(l) else max(0.0, cell["value"] - l))
            hi.append(0.0 if math.isnan(h) else max(0.0, h - cell["value"]))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=row["model"])
    ax.set_xticks(range(len(benches)), labels=benches, rotation=20 if len(benches) > 2 else 0, ha="right"
                  if len(benches) > 2 else "center", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} with 95% CI")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _label_efficiency(items: list[RunPredictions], names: dict[int, str], dataset: str, metrics: list[str]):
    """percent (or shots) vs metric, mean ± std over seeds, one line per model (from results.json summary)."""
    from ..report import subplots

    per_model: dict[str, RunPredictions] = {}
    for i, it in enumerate(items):
        if it.task == "linear-probe" and it.dataset == dataset and it.summary:
            per_model.setdefault(names[i], it)
    shown = [m for m in metrics if any(m in (next(iter(it.summary.values()), {}) or {}) for it in per_model.values())]
    if not per_model or not shown:
        return None, []
    fig, axes = subplots(1, len(shown), figsize=(4.2 * len(shown), 3.6), squeeze=False)
    xlabel = "% of training data"
    curves = []
    for ax, metric in zip(axes[0], shown):
        for model, it in per_model.items():
            pts = []
            for key, entry in it.summary.items():
                if metric not in entry:
                    continue
                x = float(key)
                pts.append((x * 100 if it.setting_kind == "percent" and x <= 1.0 else x, entry[metric].get("mean"),
                            entry[metric].get("std") or 0.0, entry[metric].get("n_seeds")))
            pts = [p for p in sorted(pts) if p[1] is not None]
            if not pts:
                continue
            if it.setting_kind == "shots":
                xlabel = "shots per class"
            xs, ys, sd = (np.array([p[k] for p in pts], dtype=float) for k in range(3))
            ax.plot(xs, ys, marker="o", label=model)
            ax.fill_between(xs, ys - sd, ys + sd, alpha=0.2)
            curves.append({"dataset": dataset, "model": model, "metric": metric,
                           "x": xs.tolist(), "mean": ys.tolist(), "std": sd.tolist(),
                           "n_seeds": [p[3] for p in pts]})
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.set_title(f"{dataset}: {metric}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("linear probe label efficiency (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return fig, curves


def compare_runs(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 metrics: Sequence[str] = DEFAULT_METRICS, n_resamples: int = 1000, seed: int = 42,
                 multi_class: str = "ovr", lp_settings: str = "primary",
                 dataset_names: dict[str, str] | None = None) -> CompareResult:
    """Leaderboard and paired tests over `run_dirs`, written to `out_dir` (see the module docstring).

    `run_dirs`: run folders, or folders holding run folders below them (e.g. a sweep's output).
    `metrics`: registry names; the first ranks the models (mean rank over the benchmarks).
    `n_resamples` / `seed`: the bootstrap of the CIs and of the paired tests (0: no CIs, no bootstrap p).
    `lp_settings`: "primary" compares each linear-probe run at its largest setting (most training data) and
    lowest seed; "all" compares every setting and seed two runs share (each its own benchmark).
    `dataset_names`: run folder -> dataset name, for single-dataset runs (default: the CSV's stem).

    Two runs of one benchmark on different image sets (paths or labels differ) are refused with one
    DataError line naming both run folders; so is one model with two runs of one benchmark.
    """
    from ..metrics import _check_multi_class, _resolve_metrics
    from ..report import save_figure, write_csv, write_json

    if lp_settings not in LP_SETTINGS:
        raise DataError(f"lp_settings must be one of {', '.join(LP_SETTINGS)}, got {lp_settings!r}")
    _check_multi_class(multi_class)
    metrics = _resolve_metrics(list(metrics), 99)
    if isinstance(n_resamples, bool) or int(n_resamples) < 0:
        raise DataError(f"n_resamples must be 0 or more, got {n_resamples!r}", param="n_resamples")
    n_resamples = int(n_resamples)
    dirs = collect_runs(run_dirs)
    given_names = _sweep_dataset_names(run_dirs)
    given_names.update({str(Path(k).resolve()): v for k, v in (dataset_names or {}).items()})
    loaded: list[RunPredictions] = []
    for d in dirs:
        loaded.extend(load_run(d, dataset=given_names.get(str(d.resolve()))))
    all_names = _label_models(loaded)
    items = _primary_lp(loaded) if lp_settings == "primary" else list(loaded)
    keep = {id(it) for it in items}
    names_list = [all_names[i] for i, it in enumerate(loaded) if id(it) in keep]
    names = dict(enumerate(names_list))
    groups = _group(items, names)
    models = sorted(set(names.values()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("compare: %d run folders, %d models, %d benchmarks", len(dirs), len(models), len(groups))

    leaderboard = _leaderboard(groups, models, metrics, n_resamples, seed, multi_class)
    order = [r["model"] for r in leaderboard]
    pairwise = _pairwise(groups, order, metrics, n_resamples, seed, multi_class)
    notes = []
    random = sorted({names[i] for i, it in enumerate(items) if it.random_init})
    if random:
        notes.append("RANDOM WEIGHTS: " + ", ".join(random) + " evaluated untrained weights")
    alone = [b for b, g in groups.items() if len(g) < 2]
    if alone:
        shown = ", ".join(alone[:3]) + (f" and {len(alone) - 3} more" if len(alone) > 3 else "")
        notes.append(f"{len(alone)} of {len(groups)} benchmarks evaluated by one model only (no paired test): {shown}")
    result = CompareResult(out_dir=out_dir, models=order, benchmarks=list(groups), metrics=list(metrics),
                           leaderboard=leaderboard, pairwise=pairwise, notes=notes)

    plots = out_dir / "plots"
    for metric in metrics:
        path = plots / f"{safe_name(metric)}.png"
        save_figure(path, _metric_plot(result, metric))
        result.files[f"plot:{metric}"] = path
    curves = []
    lp_datasets = sorted({it.dataset for it in loaded if it.task == "linear-probe"})
    for ds in lp_datasets:
        fig, c = _label_efficiency(loaded, all_names, ds, metrics)
        if fig is not None:
            path = plots / f"label_efficiency_{safe_name(ds)}.png"
            save_figure(path, fig)
            result.files[f"plot:label_efficiency:{ds}"] = path
            curves.extend(c)

    settings = {"metrics": list(metrics), "n_resamples": n_resamples, "seed": seed, "multi_class": multi_class,
                "lp_settings": lp_settings}
    result.files["leaderboard.csv"] = write_csv(out_dir / "leaderboard.csv", _leaderboard_frame(result))
    result.files["pairwise.csv"] = write_csv(out_dir / "pairwise.csv", _pairwise_frame(pairwise))
    _write_text(out_dir / "leaderboard.md", _markdown(result, settings))
    result.files["leaderboard.md"] = out_dir / "leaderboard.md"
    _write_text(out_dir / "leaderboard.html", _html(result, settings))
    result.files["leaderboard.html"] = out_dir / "leaderboard.html"
    benchmarks = {}
    for bench, group in groups.items():
        first = next(iter(group.values()))
        benchmarks[bench] = {"task": first.task, "dataset": first.dataset, "setting": first.setting,
                             "seed": first.seed, "n": first.n, "n_classes": int(first.probs.shape[1]),
                             "classnames": first.classnames,
                             "runs": {m: str(it.run_dir) for m, it in group.items()}}
    summary = {"settings": settings, "inputs": input_signature(dirs), "models": order, "benchmarks": benchmarks,
               "leaderboard": leaderboard, "pairwise": pairwise, "label_efficiency": curves, "notes": notes,
               "files": {k: str(v.relative_to(out_dir)) for k, v in result.files.items()}}
    result.files["results.json"] = write_json(out_dir / "results.json", summary)
    return result


def _write_text(path: Path, text: str) -> None:
    from ..report import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
