"""Multimodal finetuning's result: `MultimodalRun`, a `report.TaskRun` (detailed_predictions.csv,
evaluation_metrics.csv, confusion_matrix.png, the analyses and the results.json body).

`reference=True` (the doors): the reference's columns and metric names, and results.json in the layout the door
has always written (provenance before best_epoch; its bytes are pinned in benchmarks/door_hashes.json);
`reference=False` (the CLI and the API): panderm's predictions schema and the metric registry's names
(docs/OUTPUTS.md), provenance last as every task's."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from ...analysis.attach import analyse
from ...metrics import bootstrap_ci, classification_metrics
from ...predictions import predictions_frame
from ...report import confusion_matrix_figure, save_figure, write_csv
from .table import CLINICAL, DERM
from .train import METRIC_COLUMNS, PANDERM_METRIC_COLUMNS, MultimodalTrainer

#: results.json's warning when the encoders were untrained
RANDOM_ENCODERS = "RANDOM WEIGHTS: the encoders started from an untrained model"


def panderm_metrics(labels, probs, loss: float) -> dict:
    """The test metrics by the metric registry's names (`reference=False`; the door keeps `train.test_metrics`)."""
    m = classification_metrics(labels, probs, [c for c in PANDERM_METRIC_COLUMNS if c != "avg_test_loss"])
    return {c: (loss if c == "avg_test_loss" else m[c]) for c in PANDERM_METRIC_COLUMNS}


@dataclass
class MultimodalRun:
    """One tested checkpoint: `test` is `MultimodalTrainer.test()`'s dict; `val` = (labels, probs) of the val
    split for temperature scaling."""
    trainer: MultimodalTrainer
    test: dict
    fit_result: dict | None = None
    reference: bool = True
    val: tuple | None = None

    @property
    def classnames(self) -> list[str]:
        tr = self.trainer
        return list(tr.table.classnames or [str(k) for k in range(tr.n_classes)])

    @cached_property
    def metrics(self) -> dict:
        t = self.test
        return t["metrics"] if self.reference else panderm_metrics(t["labels"], t["probs"], t["metrics"]["avg_test_loss"])

    def to_json(self) -> dict:
        tr, labels, probs = self.trainer, self.test["labels"], self.test["probs"]
        ci = bootstrap_ci(labels, probs, n_resamples=tr.cfg.bootstrap, seed=42) if tr.cfg.bootstrap else None
        body = {"task": "multimodal", "n_classes": tr.n_classes, "classnames": self.classnames,
                "n_test": int(len(labels)), "checkpoint_epoch": self.test.get("epoch"), "metrics": self.metrics,
                "ci": ci, "model": tr.model.describe(), "train_config": asdict(tr.cfg)}
        if self.reference:
            body["provenance"] = None  # write_report fills it in place: the door's layout
        if self.fit_result is not None:
            body.update(best_epoch=self.fit_result.get("best_epoch"), best_val_metric=self.fit_result.get("best_metric"))
        return body

    def rows(self) -> list[dict]:
        return [dict(self.metrics)]

    def write_predictions(self, out_dir) -> Path:
        """detailed_predictions.csv alone (a test run that asked for no full report)."""
        import pandas as pd

        frame = self.trainer.table.split("test").frame
        probs, labels = self.test["probs"], self.test["labels"]
        if self.reference:
            pred = pd.DataFrame({"derm_filename": frame[DERM].astype(str).to_numpy(),
                                 "cli_filename": frame[CLINICAL].astype(str).to_numpy(),
                                 "true_label": labels, "predicted_label": probs.argmax(1)})
            for k in range(probs.shape[1]):
                pred[f"probability_class_{k}"] = probs[:, k]
        else:
            pred = predictions_frame(frame[DERM].to_numpy(), labels, probs, self.classnames,
                                     image_paths_2=frame[CLINICAL].to_numpy())
        return write_csv(Path(out_dir) / "detailed_predictions.csv", pred, index=False)

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """detailed_predictions.csv, evaluation_metrics.csv, confusion_matrix.png and (`reference=False`) the
        analyses; the results.json body."""
        import pandas as pd

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels, probs = self.test["labels"], self.test["probs"]
        self.write_predictions(out)
        metrics, columns = self.metrics, METRIC_COLUMNS if self.reference else PANDERM_METRIC_COLUMNS
        write_csv(out / "evaluation_metrics.csv", pd.DataFrame([{c: metrics[c] for c in columns}]), index=False)
        save_figure(out / "confusion_matrix.png",
                    confusion_matrix_figure(labels, probs.argmax(1), self.classnames, title="test"))
        body = self.to_json()
        if not self.reference:
            # group columns come from the raw input rows (`meta`), not the normalised case frame
            analyse(body, out, labels, probs, self.trainer.table.split("test").meta, analysis,
                    classnames=self.classnames, val=self.val, title="multimodal test")
        return body
