"""Finetuning reports: results.json, per-sample predictions, the confusion matrix and the epoch log."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .trainer import Finetuner


def predictions_frame(test_table, labels, probs):
    """Per-sample predictions in the panderm schema (docs/OUTPUTS.md)."""
    from ...predictions import predictions_frame as frame

    return frame(test_table.frame[test_table.image_col].to_numpy(), labels, probs, test_table.classnames)


def write_report(ft: Finetuner, test: dict, out_dir, provenance: dict, fit_result: dict | None = None,
                 name: str = "test", analysis=None, val: tuple | None = None) -> dict:
    """results.json (results_<name>.json), predictions/<name>.csv, the confusion matrix and the analyses
    (calibration; subgroups with `analysis.group_cols`; temperature scaling with `val` = (labels, probs))."""
    from ...analysis.attach import analyse
    from ...metrics import bootstrap_ci
    from ...report import confusion_matrix_figure, save_figure, write_csv, write_json

    out_dir = Path(out_dir)
    table = ft.splits.tables["test"]
    write_csv(out_dir / "predictions" / f"{name}.csv", predictions_frame(table, test["labels"], test["probs"]))
    names = list(table.classnames) if table.classnames else [str(k) for k in range(ft.n_classes)]
    save_figure(out_dir / f"confusion_matrix_{name}.png",
                confusion_matrix_figure(test["labels"], test["probs"].argmax(1), names, title=name))
    ci = None
    if ft.cfg.bootstrap:
        ci = bootstrap_ci(test["labels"], test["probs"], n_resamples=ft.cfg.bootstrap, seed=42)
    summary = {
        "task": "finetune", "n_classes": ft.n_classes,
        "classnames": list(table.classnames) if table.classnames else None, "n_test": int(len(test["labels"])),
        "checkpoint_epoch": test["epoch"], "tta": test["tta"], "monitor": ft.monitor,
        "metrics": test["metrics"], "ci": ci,
        "pooling": "mean patch tokens + fc_norm (init from final norm)" if ft.model.mean_pool else "encoder features",
        "drop_path_applied": ft.model.drop_path_applied, "rel_pos_bias": ft.model.rel_pos_bias,
        "frozen_parameters": len(ft.frozen),
        "image_size": ft.size, "config": asdict(ft.cfg), "provenance": provenance,
    }
    if fit_result is not None:
        summary["best_epoch"] = fit_result.get("best_epoch")
        summary["best_val_metric"] = fit_result.get("best_metric")
    if ft.encoder.random_init:
        summary["warning"] = "RANDOM WEIGHTS: the backbone started from an untrained model"
    analyse(summary, out_dir, test["labels"], test["probs"], table.frame, analysis, classnames=names, val=val,
            title=f"finetune {name}", stem="" if name == "test" else f"{name}_")
    write_json(out_dir / ("results.json" if name == "test" else f"results_{name}.json"), summary)
    return summary


def read_log(out_dir) -> list[dict]:
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
