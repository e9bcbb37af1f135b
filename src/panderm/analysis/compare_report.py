"""What a comparison writes: leaderboard and pairwise tables (CSV frames), ``leaderboard.md`` / ``.html`` and
the plots (each metric with its CI, linear-probe label efficiency). The numbers come from :mod:`.compare_stats`.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .compare_stats import CompareResult
from .runs import RunPredictions


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
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>panderm leaderboard</title>",
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


def _write_text(path: Path, text: str) -> None:
    from ..report import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
