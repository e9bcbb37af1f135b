"""The numbers of a comparison and the :class:`CompareResult` that holds them: each model's metrics with
bootstrap CIs and ranks per benchmark, and the paired tests between models (paired bootstrap, DeLong for AUROC,
Holm across benchmarks). Rendering: :mod:`.compare_report`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .runs import RunPredictions


@dataclass
class CompareResult:
    """What :func:`panderm.analysis.compare.compare_runs` computed and wrote."""

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
