"""Read a panderm run folder back: the per-sample predictions of every evaluated set, with who made them.

:func:`load_run` knows the layouts of docs/OUTPUTS.md:

| task | results | predictions |
|---|---|---|
| zeroshot | ``<out>/results.json`` (``datasets``) | ``<out>/<dataset>/predictions.csv`` per dataset |
| linear-probe | ``<out>/results.json`` (``runs``, ``summary``) | ``<out>/predictions/<percent_P or shots_S>_seed<N>.csv`` |
| finetune | ``<out>/results.json`` (``task: finetune``) | ``<out>/predictions/test.csv`` |
| multimodal | ``<out>/results.json`` or ``results_test.json`` | ``<out>/detailed_predictions.csv`` |
| demo | ``<out>/results.json`` | its ``zeroshot/`` and ``linear_probe/`` run folders |

The model is ``provenance.model.model_id`` of results.json (multimodal: the same, written by its encoder).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["RunPredictions", "load_run", "is_run_dir", "find_runs", "run_task"]

TASKS = ("zeroshot", "linear-probe", "finetune", "multimodal")


@dataclass
class RunPredictions:
    """One evaluated set of one run: labels, probabilities and where they came from.

    ``benchmark`` identifies what was evaluated (task, dataset, and for the linear probe the setting and
    seed); two runs of one benchmark must hold the same images to be compared.
    """

    run_dir: Path
    model: str  # the model id as the run recorded it (provenance.model.model_id)
    task: str  # zeroshot, linear-probe, finetune, multimodal
    dataset: str
    labels: np.ndarray  # [N] int
    probs: np.ndarray  # [N, K]
    classnames: list[str]
    image_paths: list[str]
    predictions_file: Path
    metrics: dict = field(default_factory=dict)  # as results.json recorded them
    ci: dict | None = None
    setting: str | None = None  # linear probe: "percent_1.0" / "shots_16"
    seed: int | None = None  # linear probe: the subsampling seed
    fingerprint: str | None = None
    summary: dict | None = None  # linear probe: results.json summary (mean/std over seeds per setting)
    setting_kind: str | None = None  # linear probe: "percent" or "shots"
    random_init: bool = False

    @property
    def benchmark(self) -> str:
        base = f"{self.task}:{self.dataset}"
        return f"{base} [{self.setting} seed{self.seed}]" if self.setting is not None else base

    @property
    def n(self) -> int:
        return int(len(self.labels))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} does not hold a JSON object")
    return data


def run_task(results: dict) -> str | None:
    """The task that wrote this results.json, or None for a file no classification task writes."""
    if isinstance(results.get("datasets"), dict):
        return "zeroshot"
    if "runs" in results and "summary" in results and "setting" in results:
        return "linear-probe"
    if results.get("task") in ("finetune", "multimodal"):
        return results["task"]
    return None


def _is_demo(results: dict, run_dir: Path) -> bool:
    return any(key in results for key in ("zeroshot", "linear_probe_run")) and (
        (run_dir / "zeroshot" / "results.json").is_file() or (run_dir / "linear_probe" / "results.json").is_file())


def _results_file(run_dir: Path) -> Path | None:
    for name in ("results.json", "results_test.json"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def is_run_dir(run_dir: str | os.PathLike) -> bool:
    """A folder holding a classification run (or a demo output) that :func:`load_run` reads."""
    run_dir = Path(run_dir)
    path = _results_file(run_dir)
    if path is None:
        return False
    try:
        results = _read_json(path)
    except (DataError, OSError):
        return False
    return run_task(results) is not None or _is_demo(results, run_dir)


def find_runs(folder: str | os.PathLike) -> list[Path]:
    """Every run folder at or below `folder` (sorted), skipping folders inside a run."""
    folder = Path(folder)
    if is_run_dir(folder):
        return [folder]
    found: list[Path] = []
    for path in sorted(folder.rglob("results*.json")):
        parent = path.parent
        if any(parent == f or f in parent.parents for f in found):
            continue
        if is_run_dir(parent):
            found.append(parent)
    return found


def _model_of(results: dict, path: Path) -> tuple[str, str | None, bool]:
    prov = results.get("provenance") or {}
    model = prov.get("model") if isinstance(prov, dict) else None
    if not isinstance(model, dict) or not model.get("model_id"):
        raise DataError(f"{path} does not name its model (no provenance.model.model_id): cannot tell which model "
                        "made these predictions")
    return str(model["model_id"]), model.get("fingerprint"), bool(model.get("random_init", False))


def _dataset_of(results: dict, run_dir: Path) -> str:
    """The dataset of a single-dataset run: the stem of its CSV (provenance.csv_sha256), else the folder name."""
    prov = results.get("provenance") or {}
    csvs = list((prov.get("csv_sha256") or {}).keys()) if isinstance(prov, dict) else []
    if csvs:
        return Path(csvs[0]).stem
    return run_dir.resolve().name


def _read_predictions(path: Path, classnames: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """labels, probs, classnames, image paths from a predictions CSV (panderm schema or the multimodal
    reference's `true_label` / `probability_class_<k>`)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"predictions file missing: {path} (the run did not finish, or was moved)")
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    cols = list(frame.columns)
    if "label" in cols and any(c.startswith("prob_") for c in cols):
        prob_cols = [c for c in cols if c.startswith("prob_")]
        label_col, paths = "label", frame["image_path"].astype(str).tolist() if "image_path" in cols else None
        if "image_path_2" in cols and paths is not None:
            paths = [f"{a}|{b}" for a, b in zip(paths, frame["image_path_2"].astype(str))]
        names = [c[len("prob_"):] for c in prob_cols]
    elif "true_label" in cols and any(c.startswith("probability_class_") for c in cols):
        prob_cols = sorted((c for c in cols if c.startswith("probability_class_")),
                           key=lambda c: int(c.rsplit("_", 1)[1]))
        label_col = "true_label"
        firsts = [c for c in ("derm_filename", "cli_filename") if c in cols]
        paths = ["|".join(str(frame[c].iloc[i]) for c in firsts) for i in range(len(frame))] if firsts else None
        names = [c.rsplit("_", 1)[1] for c in prob_cols]
    else:
        raise DataError(f"{path}: not a predictions file (needs label + prob_<class> columns); columns: "
                        f"{', '.join(map(str, cols))}")
    if paths is None:
        paths = [str(i) for i in range(len(frame))]
    probs = frame[prob_cols].to_numpy(dtype=np.float64)
    try:
        labels = frame[label_col].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: column {label_col!r} must hold class indices") from None
    if len(frame) == 0:
        raise DataError(f"{path} has no rows")
    if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
        raise DataError(f"{path}: column {label_col!r} must hold class indices")
    if not np.isfinite(probs).all():
        r, c = np.argwhere(~np.isfinite(probs))[0]
        raise DataError(f"{path}: {prob_cols[c]} is not a number in row {r + 1}")
    if classnames and len(classnames) == probs.shape[1]:
        names = [str(c) for c in classnames]
    return labels.astype(np.int64), probs, names, paths


def _zeroshot(results: dict, run_dir: Path, path: Path) -> list[RunPredictions]:
    model, fp, rnd = _model_of(results, path)
    out = []
    for name, entry in results["datasets"].items():
        pred_file = run_dir / name / "predictions.csv"
        labels, probs, names, paths = _read_predictions(pred_file, entry.get("classnames"))
        out.append(RunPredictions(run_dir=run_dir, model=model, task="zeroshot", dataset=str(name), labels=labels,
                                  probs=probs, classnames=names, image_paths=paths, predictions_file=pred_file,
                                  metrics=entry.get("metrics") or {}, ci=entry.get("ci95"), fingerprint=fp,
                                  random_init=rnd))
    return out


def _setting_tag(run: dict) -> tuple[str, str, float]:
    """('percent' | 'shots', file tag 'percent_1.0', numeric value) of one linear-probe run entry."""
    if run.get("shots") is not None:
        return "shots", f"shots_{run['shots']}", float(run["shots"])
    return "percent", f"percent_{run['percent']}", float(run["percent"])


def _linear_probe(results: dict, run_dir: Path, path: Path, dataset: str | None) -> list[RunPredictions]:
    model, fp, rnd = _model_of(results, path)
    dataset = dataset or _dataset_of(results, run_dir)
    out = []
    for run in results.get("runs") or []:
        kind, tag, _ = _setting_tag(run)
        pred_file = run_dir / "predictions" / f"{tag}_seed{run['seed']}.csv"
        labels, probs, names, paths = _read_predictions(pred_file, results.get("classnames"))
        out.append(RunPredictions(run_dir=run_dir, model=model, task="linear-probe", dataset=dataset, labels=labels,
                                  probs=probs, classnames=names, image_paths=paths, predictions_file=pred_file,
                                  metrics=run.get("metrics") or {}, ci=run.get("ci"), setting=tag,
                                  seed=int(run["seed"]), fingerprint=fp, summary=results.get("summary"),
                                  setting_kind=kind, random_init=rnd))
    if not out:
        raise DataError(f"{path} lists no linear-probe runs")
    return out


def _single(results: dict, run_dir: Path, path: Path, task: str, dataset: str | None) -> list[RunPredictions]:
    model, fp, rnd = _model_of(results, path)
    pred_file = run_dir / ("predictions/test.csv" if task == "finetune" else "detailed_predictions.csv")
    labels, probs, names, paths = _read_predictions(pred_file, results.get("classnames"))
    return [RunPredictions(run_dir=run_dir, model=model, task=task, dataset=dataset or _dataset_of(results, run_dir),
                           labels=labels, probs=probs, classnames=names, image_paths=paths,
                           predictions_file=pred_file, metrics=results.get("metrics") or {}, ci=results.get("ci"),
                           fingerprint=fp, random_init=rnd)]


def load_run(run_dir: str | os.PathLike, dataset: str | None = None) -> list[RunPredictions]:
    """Every evaluated set of the run folder `run_dir`, one :class:`RunPredictions` each.

    `dataset` names the dataset of a single-dataset run (linear probe, finetune, multimodal); by default it is
    the stem of the run's CSV, else the folder's name. Zero-shot runs name their datasets themselves.
    A folder that holds no classification run is one DataError line.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}")
    path = _results_file(run_dir)
    if path is None:
        raise DataError(f"{run_dir} holds no results.json: not a panderm run folder (or the run did not finish)")
    results = _read_json(path)
    task = run_task(results)
    if task == "zeroshot":
        return _zeroshot(results, run_dir, path)
    if task == "linear-probe":
        return _linear_probe(results, run_dir, path, dataset)
    if task in ("finetune", "multimodal"):
        return _single(results, run_dir, path, task, dataset)
    if _is_demo(results, run_dir):
        out: list[RunPredictions] = []
        for sub, name in (("zeroshot", None), ("linear_probe", "PAD-UFES-20-sample")):  # the demo's probe set
            if (run_dir / sub / "results.json").is_file():
                out.extend(load_run(run_dir / sub, dataset=name))
        return out
    raise DataError(f"{path} is not the results of a classification run (zeroshot, linear-probe, finetune, "
                    "multimodal); retrieval and segmentation runs have no class predictions to compare")


def finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v
