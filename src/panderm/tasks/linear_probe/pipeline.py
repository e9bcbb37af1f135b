"""Linear-probe runs: a CSV with a split column → frozen features (cached) → probe → reports.

One feature extraction per (model, dataset, preprocessing) serves every fraction,
seed and C. The reference door uses the reference feature of each family
(`reference_feature`) and its preprocessing (Resize 256 bilinear → crop 224 →
ImageNet mean with the 0.228 std typo); the CLI and the API use the model's
own preprocessing by default.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...analysis.attach import analyse, AnalysisSettings
from ...data.splits import Splits, load_splits  # noqa: F401 (load_splits: importers use it from here too)
from ...data.tables import ImageTable
from ...errors import DataError
from ...features import extract_features
from ...models.base import Encoder
from ...models.cards import card_for
from ...predictions import predictions_frame as frame
from ...report import confusion_matrix_figure, format_table, save_figure, write_csv, write_report
from . import run_linear_probe

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def reference_feature(encoder: Encoder) -> tuple[str, bool]:
    """(kind, L2-normalise) the reference linear probe used for this model: its card (docs/REFERENCE.md)."""
    return card_for(encoder).reference_feature


def reference_precision(encoder: Encoder) -> str:
    """The reference probe extracted in float32 (inference_mode), except MONET, which `clip.load` keeps in
    fp16 on CUDA; fp16 autocast is the nearest we run (weights stay float32). Read from the model's card."""
    return card_for(encoder).probe_precision


ProbeSplits = Splits  # the split tables now live in data.splits; the old name stays for importers


def split_features(encoder: Encoder, splits: ProbeSplits, kind: str, normalize: bool, **kw) -> dict[str, np.ndarray]:
    out = {}
    for name, table in splits.tables.items():
        x = np.array(extract_features(encoder, table.paths, kind, **kw).array, dtype=np.float32)
        if normalize:
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out[name] = x
    return out


@dataclass(frozen=True)
class LinearProbeRun:
    """One probe run over every fraction (or shot count) and seed: the splits, the feature probed, and
    :func:`~panderm.tasks.linear_probe.run_linear_probe`'s dict (`probe`: runs, summary, test labels, ...)."""

    splits: ProbeSplits
    kind: str
    normalized: bool
    probe: dict

    def rows(self) -> list[dict]:
        return summary_rows(self.probe)

    def to_json(self) -> dict:
        p = self.probe
        runs = [{k: r[k] for k in ("percent", "shots", "seed", "random_state", "n_train", "class_counts", "C", "n_iter",
                                   "n_evals", "grad_max", "converged", "tol", "train_loss", "metrics", "ci", "warnings",
                                   "c_search")} for r in p["runs"]]
        return {"setting": p["setting"], "n_classes": p["n_classes"],
                "classnames": list(self.splits.classnames) if self.splits.classnames else None,
                "n_features": p["n_features"], "n_test": p["n_test"], "summary": p["summary"], "runs": runs}

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """predictions/<run>.csv, the first seed's confusion matrices, and per run the analyses under analysis/
        (calibration; subgroups with `analysis.group_cols`; temperature scaling on val with `analysis.calibrate`);
        the results.json body."""
        p, splits = self.probe, self.splits
        test, names = splits.tables["test"], splits.class_labels()
        summary = self.to_json()
        for i, (r, entry) in enumerate(zip(p["runs"], summary["runs"])):
            tag = (f"shots_{r['shots']}" if r["shots"] is not None else f"percent_{r['percent']}") + f"_seed{r['seed']}"
            write_csv(out_dir / "predictions" / f"{tag}.csv", panderm_predictions_frame(p, i, test, names))
            if r["seed"] == p["runs"][0]["seed"]:
                save_figure(out_dir / f"confusion_matrix_{tag}.png",
                            confusion_matrix_figure(p["test_labels"], r["predictions"], names, title=tag))
            val = (splits.tables["val"].labels, r["val_probs"]) if r.get("val_probs") is not None else None
            analyse(entry, out_dir / "analysis", p["test_labels"], r["probs"], test.frame, analysis,
                    classnames=names, val=val, title=tag, stem=f"{tag}_")
        return summary


def run(encoder: Encoder, splits: ProbeSplits, kind: str, normalize: bool, *, percent_data=(1.0,), seeds=(0,),
        shots=None, tune_c=False, C=None, n_bootstrap=1000, extract_kw=None, device="cpu",
        tol=None) -> LinearProbeRun:
    feats = split_features(encoder, splits, kind, normalize, **(extract_kw or {}))
    t = splits.tables
    has_val = "val" in t
    if tune_c and not has_val:
        raise DataError(f"{splits.csv}: tuning C needs val rows in the split column", param="tune_c", drop=True)
    probe = run_linear_probe(
        feats["train"], t["train"].labels, feats["test"], t["test"].labels,
        feats.get("val"), t["val"].labels if has_val else None,
        percent_data=tuple(percent_data), seeds=tuple(seeds), tune_c=tune_c, C=C, n_bootstrap=n_bootstrap,
        shots=tuple(shots) if shots else None, n_classes=splits.n_classes, device=device, tol=tol,
        class_names=splits.class_labels())
    return LinearProbeRun(splits, kind, normalize, probe)


def predictions_frame(result: dict, run_index: int, test: ImageTable, id_col: str = "filename") -> pd.DataFrame:
    """Reference layout: filename, true_label, predicted_label, then `probability` (binary) or per class."""
    r = result["runs"][run_index]
    probs = r["probs"]
    frame = pd.DataFrame({id_col: test.frame[test.image_col].astype(str).to_numpy(),
                          "true_label": result["test_labels"], "predicted_label": r["predictions"]})
    if probs.shape[1] == 2:
        frame["probability"] = probs[:, 1]
    else:
        for k in range(probs.shape[1]):
            frame[f"probability_class_{k}"] = probs[:, k]
    return frame


def panderm_predictions_frame(result: dict, run_index: int, test: ImageTable, classnames=None) -> pd.DataFrame:
    """Per-sample predictions in the panderm schema (docs/OUTPUTS.md): both class columns for two classes."""
    return frame(test.frame[test.image_col].to_numpy(), result["test_labels"], result["runs"][run_index]["probs"],
                 classnames)


def reference_summary_row(dataset: str, metrics: dict) -> pd.DataFrame:
    """`Dataset, W_F1, AUROC, BACC, ACC, AUPR` with %.4f values (the reference's results CSV)."""
    values = [metrics["weighted_f1"], metrics["auroc"], metrics["balanced_accuracy"], metrics["accuracy"],
              metrics["aupr"]]
    return pd.DataFrame([[dataset] + [f"{v:.4f}" for v in values]], columns=["Dataset", "W_F1", "AUROC", "BACC", "ACC", "AUPR"])


def write_reference_outputs(run: LinearProbeRun, output_dir, csv_filename: str) -> None:
    """The reference linear_eval.py files for the first run (reference seed)."""
    result, splits = run.probe, run.splits
    output_dir = Path(output_dir)
    dataset = splits.csv.stem
    test = splits.tables["test"]
    run0 = result["runs"][0]
    write_csv(output_dir / splits.csv.name, predictions_frame(result, 0, test, "filename"))
    names = splits.class_labels()
    save_figure(output_dir / f"confusion_matrix_{dataset}.jpg",
                confusion_matrix_figure(result["test_labels"], run0["predictions"], names, title=dataset))
    # Header always written (the reference drops it on reruns).
    write_csv(output_dir / Path(csv_filename).name, reference_summary_row(dataset, run0["metrics"]))


def summary_rows(result: dict) -> list[dict]:
    rows = []
    for setting, metrics in result["summary"].items():
        row = {("shots" if result["setting"] == "shots" else "percent"): f"{setting:g}"}
        for name in ("accuracy", "balanced_accuracy", "weighted_f1", "auroc", "auroc_ovr", "aupr"):
            m = metrics[name]
            row[name] = f"{m['mean']:.4f}" + (f" ± {m['std']:.4f}" if m["n_seeds"] > 1 else "")
        rows.append(row)
    return rows


def reference_output_dir(output_dir: str) -> str:
    """The reference rewrites `.../open_clip_hf-hub:ORG/NAME` to `.../NAME`."""
    import re

    return re.sub(r"open_clip_hf-hub:[^/]+/", "", output_dir)


def demo(encoder: Encoder, sample_root: Path, out_dir: Path) -> list[dict]:
    """Linear probe on the bundled PAD-UFES-20 sample at 10%, 50% and 100% of train, 3 seeds."""
    splits = load_splits(sample_root / "pad_ufes20_sample" / "pad_ufes20_sample.csv")
    kind, norm = reference_feature(encoder)
    result = run(encoder, splits, kind, norm, percent_data=(0.1, 0.5, 1.0), seeds=(0, 1, 2), n_bootstrap=200)
    rows = result.rows()
    print(f"\nLinear probe (PAD-UFES-20 sample, {kind} features, mean ± std over 3 seeds)")
    print(format_table(rows))
    analysis = AnalysisSettings(group_cols=("fitspatrick",), min_group=5, n_resamples=200)
    summary = write_report(result, out_dir / "linear_probe", {"model": encoder.describe()},
                           encoder.random_init, analysis=analysis)
    full = next(r for r in summary["runs"] if r["percent"] == 1.0 and r["seed"] == 0)
    print("\nBy Fitzpatrick skin type (100% of train, seed 0; * fewer than 5 test images; ECE "
          f"{full['calibration']['ece']:.4f})")
    print(format_table(subgroup_rows(full["subgroups"], "fitspatrick")))
    return rows


def subgroup_rows(report: dict, column: str) -> list[dict]:
    """One printable row per group: n, accuracy and balanced accuracy with their CIs."""
    rows = []
    for g in report["columns"][column]["groups"]:
        row = {column: g["group"] + ("*" if g["small"] else ""), "n": g["n"]}
        for name in ("accuracy", "balanced_accuracy"):
            value, ci = g["metrics"].get(name), (g.get("ci") or {}).get(name)
            row[name] = "-" if value is None else f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        rows.append(row)
    return rows
