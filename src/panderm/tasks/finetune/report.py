"""Finetuning's result: `FinetuneRun`, a `report.TaskRun` (per-sample predictions, the confusion matrix, the
analyses and the results.json body); plus the epoch log reader."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ...analysis.attach import analyse
from ...metrics import bootstrap_ci
from ...predictions import predictions_frame as frame
from ...report import confusion_matrix_figure, save_figure, write_csv
from .trainer import Finetuner


def predictions_frame(test_table, labels, probs):
    """Per-sample predictions in the panderm schema (docs/OUTPUTS.md)."""
    return frame(test_table.frame[test_table.image_col].to_numpy(), labels, probs, test_table.classnames)


@dataclass
class FinetuneRun:
    """One tested checkpoint: `test` is `Finetuner.test()`'s dict; `name` "test" (after training) or "eval"
    (evaluating a saved checkpoint: files named results_eval.json, predictions/eval.csv, confusion_matrix_eval.png); `val` =
    (labels, probs) of the val split for temperature scaling."""
    tuner: Finetuner
    test: dict
    name: str = "test"
    fit_result: dict | None = None
    val: tuple | None = None

    @property
    def filename(self) -> str:
        return "results.json" if self.name == "test" else f"results_{self.name}.json"

    @property
    def _classnames(self) -> list[str]:
        table = self.tuner.splits.tables["test"]
        return list(table.classnames) if table.classnames else [str(k) for k in range(self.tuner.n_classes)]

    def to_json(self) -> dict:
        ft, test = self.tuner, self.test
        table = ft.splits.tables["test"]
        ci = None
        if ft.cfg.bootstrap:
            ci = bootstrap_ci(test["labels"], test["probs"], n_resamples=ft.cfg.bootstrap, seed=42)
        body = {
            "task": "finetune", "n_classes": ft.n_classes,
            "classnames": list(table.classnames) if table.classnames else None, "n_test": int(len(test["labels"])),
            "checkpoint_epoch": test["epoch"], "tta": test["tta"], "monitor": ft.monitor,
            "metrics": test["metrics"], "ci": ci,
            "pooling": "mean patch tokens + fc_norm (init from final norm)" if ft.model.mean_pool
            else "encoder features",
            "drop_path_applied": ft.model.drop_path_applied, "rel_pos_bias": ft.model.rel_pos_bias,
            "frozen_parameters": len(ft.frozen), "image_size": ft.size, "config": asdict(ft.cfg),
        }
        if self.fit_result is not None:
            body["best_epoch"] = self.fit_result.get("best_epoch")
            body["best_val_metric"] = self.fit_result.get("best_metric")
        return body

    def rows(self) -> list[dict]:
        row = {"split": "test", "epoch": self.test["epoch"], "tta": self.test["tta"]}
        row.update({k: self.test["metrics"][k] for k in ("accuracy", "balanced_accuracy", "weighted_f1", "auroc")})
        return [row]

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """predictions/<name>.csv, confusion_matrix_<name>.png and the analyses (calibration; subgroups with
        `analysis.group_cols`; temperature scaling with `val`); the results.json body."""
        out_dir, name, test = Path(out_dir), self.name, self.test
        table = self.tuner.splits.tables["test"]
        names = self._classnames
        write_csv(out_dir / "predictions" / f"{name}.csv", predictions_frame(table, test["labels"], test["probs"]))
        save_figure(out_dir / f"confusion_matrix_{name}.png",
                    confusion_matrix_figure(test["labels"], test["probs"].argmax(1), names, title=name))
        body = self.to_json()
        analyse(body, out_dir, test["labels"], test["probs"], table.frame, analysis, classnames=names,
                val=self.val, title=f"finetune {name}", stem="" if name == "test" else f"{name}_")
        return body


def read_log(out_dir) -> list[dict]:
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
