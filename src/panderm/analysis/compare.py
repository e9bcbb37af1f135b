"""Leaderboard and paired significance tests over panderm run folders.

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
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import DataError
from .compare_report import (
    PAIRWISE_COLUMNS,  # noqa: F401 - importable from here as before
    _html,
    _label_efficiency,
    _leaderboard_frame,
    _markdown,
    _metric_plot,
    _pairwise_frame,
    _write_text,
)
from .compare_stats import CompareResult, _leaderboard, _pairwise
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
    from ..report import file_sha256

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
