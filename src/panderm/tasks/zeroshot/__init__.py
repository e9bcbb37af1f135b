"""Zero-shot classification: class names × prompt templates → a classifier over image embeddings.

Classifier weights follow the reference (docs/REFERENCE.md): for each class,
L2-normalise every prompt embedding, average over templates, re-normalise.
Scores are `softmax(100 · cos)` with the reference's fixed scale (the model's
learned logit scale is not used). Text is encoded once per (model, class list,
templates) and cached; images go through the feature cache.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...analysis.attach import analyse
from ...data.benchmarks import Benchmark, get_benchmark, readme_average
from ...data.tables import ImageTable, load_table
from ...data.templates import SKIN_TEMPLATES, render
from ...errors import DataError
from ...features import (
    _autocast, autocast_dtype, base_precision, cached_text_embeddings, cpu_autocast, effective_precision, embed_dtype,
    extract_features, resolve_batch_size, text_cache_key,
)
from ...metrics import bootstrap_ci, classification_metrics, reported_metrics
from ...models.base import Encoder
from ...models.demo import cache_root
from ...predictions import predictions_frame
from ...report import confusion_matrix_figure, format_table, save_figure, write_csv, write_report

log = logging.getLogger(__name__)
LOGIT_SCALE = 100.0


def _text_cache_dir() -> Path:
    return cache_root() / "text"


def class_embeddings(
    encoder: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str] = SKIN_TEMPLATES,
    classes_per_batch: int = 10,
    cache: bool = True,
    precision: str = "amp",
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """[K, D] float32 unit vectors: normalise each prompt, mean over templates, re-normalise.

    Cached under a key covering the encoder fingerprint (weights + model configuration), the code versions, the
    class names, the templates, the prompts' token ids and the precision; the entry is checksummed and a corrupt
    or truncated one is recomputed with one warning.
    """
    if len(classnames) == 0:
        raise DataError("no class names given")
    batches = []
    for start in range(0, len(classnames), classes_per_batch):
        batch = classnames[start:start + classes_per_batch]
        batches.append((len(batch), encoder.tokenize([p for c in batch for p in render(templates, c)])))
    entry = None
    if cache:
        key = text_cache_key(encoder, precision, {"c": list(classnames), "t": list(templates)},
                             {"per_batch": classes_per_batch}, [ids for _, ids in batches])
        entry = (Path(cache_dir) / "text" if cache_dir else _text_cache_dir()) / f"classes-{key}.npy"

    def compute() -> np.ndarray:
        device = encoder.device
        out = []
        with torch.inference_mode(), _autocast(device, precision):
            for count, ids in batches:
                emb = encoder.encode_text(ids.to(device)).float()
                emb = F.normalize(emb, dim=-1).reshape(count, len(templates), -1)
                out.append(F.normalize(emb.mean(dim=1), dim=-1).cpu())
        return torch.cat(out).numpy().astype(np.float32)

    # The one text-embedding cache (panderm.features.text), shared with extract_text_features.
    return cached_text_embeddings(entry, len(classnames), compute,
                                  {"model": encoder.describe(), "kind": "classes", "n": len(classnames)})


def zero_shot_probs(image_embeddings: np.ndarray, class_weights: np.ndarray, scale: float = LOGIT_SCALE,
                    logits_dtype: torch.dtype | None = None) -> np.ndarray:
    """softmax(scale · normalise(image) · Wᵀ), computed in float32.

    `logits_dtype` (float16 / bfloat16) reproduces the reference's `100. * f @ W` under CUDA autocast:
    the normalised features (float32 there) are scaled, both operands rounded to the half type, the
    product accumulated in float32 and rounded to the half type; the softmax runs in float32. Logits of
    20-60 are then quantised to steps of 1/64-1/32, which can tie or swap close classes.
    """
    # A copy: the features may be a read-only memory map of the cache.
    f = F.normalize(torch.from_numpy(np.array(image_embeddings, dtype=np.float32)), dim=-1)
    w = torch.as_tensor(class_weights, dtype=torch.float32)
    if logits_dtype is None:
        logits = scale * f @ w.T
    else:
        lhs = (scale * f).to(logits_dtype).float()
        logits = (lhs @ w.to(logits_dtype).float().T).to(logits_dtype).float()
    return logits.softmax(dim=-1).numpy()


def reference_logits_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype the reference's CUDA autocast gives the zero-shot logits under `precision` (None: float32)."""
    mode = effective_precision(torch.device(device), precision)
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)


def cpu_autocast_probs(image_embeddings: np.ndarray, class_weights: np.ndarray, dtype: torch.dtype,
                       batch_size: int, embed_dtype: torch.dtype | None = None,
                       scale: float = LOGIT_SCALE) -> np.ndarray:
    """The reference's scores with the amp (amp_bf16) precision on CPU, where its zero-shot loop runs under
    torch.autocast("cpu", dtype) (docs/REFERENCE.md, Zero-shot classification; open_clip_train's get_autocast with the device's type).

    Per batch of `batch_size` images, as the reference's loop: the tower's output, in `embed_dtype` (its dtype
    under that autocast: `dtype` when a projection ends the tower), is L2-normalised in that dtype; `100.0 * f`
    keeps it; `@ W` (W the [D, K] float32 classifier, built outside the autocast because the reference's
    classifier autocast is CUDA-only) is an autocast matmul, so the logits are in `dtype`; softmax is not an
    autocast op on CPU and keeps `dtype`. Probabilities come back in float16 as the reference keeps them
    (its per-sample CSV prints float16 values); bfloat16 ones as float32 (NumPy has no bfloat16, and the
    reference's own `.numpy()` fails there).
    """
    embed_dtype = embed_dtype or dtype
    w = torch.as_tensor(np.asarray(class_weights), dtype=torch.float32).T.contiguous()  # [D, K], as built there
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        for start in range(0, len(image_embeddings), batch_size):
            f = np.array(image_embeddings[start:start + batch_size], dtype=np.float32)  # a copy: maybe a read-only map
            f = F.normalize(torch.from_numpy(f).to(embed_dtype), dim=-1)
            out.append(torch.softmax(scale * f @ w, dim=1))
    probs = torch.cat(out)
    return probs.numpy() if probs.dtype == torch.float16 else probs.float().numpy()


@dataclass
class ZeroShotDataset:
    """One evaluation set: a validated table, its class names and (optionally) its benchmark."""

    name: str
    table: ImageTable
    classnames: tuple[str, ...]
    benchmark: Benchmark | None = None
    folder: str = "customized_dataset"  # reference per-sample CSV folder (DermFM-Zero)
    split: str | None = None  # the rows scored: those of this split (None: every row)

    @property
    def report_metrics(self) -> tuple[str, ...]:
        base = ["accuracy", "balanced_accuracy", "weighted_f1", "macro_f1", "auroc"]
        if len(self.classnames) > 3:
            base.insert(3, "top3_accuracy")
        return reported_metrics(base)  # + the metrics a user registered (panderm.metrics.register_metric)

    @property
    def headline(self) -> str:
        """The published table's metric: the benchmark's README metric; AUROC for binary custom sets."""
        if self.benchmark is not None and self.benchmark.readme_metric is not None:
            return self.benchmark.readme_metric
        return "auroc" if len(self.classnames) == 2 else "accuracy"


@dataclass
class ZeroShotResult:
    dataset: ZeroShotDataset
    probs: np.ndarray
    labels: np.ndarray
    metrics: dict
    ci: dict = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def reference_metrics(self) -> dict:
        """Reference result keys (e.g. `zeroshot-pad-acc`) for this dataset."""
        if self.dataset.benchmark is not None and self.dataset.benchmark.is_reference:
            return self.dataset.benchmark.reference_results(self.metrics)
        return {"zeroshot-customized_dataset-wf1": self.metrics["weighted_f1"],
                "zeroshot-customized_dataset-acc": self.metrics["accuracy"]}

    def predictions_frame(self, id_col: str = "image_path") -> pd.DataFrame:
        """Reference per-sample layout: id, true_label, predicted_label, probability_class_0..K-1."""
        frame = pd.DataFrame({
            id_col: self.dataset.table.frame[self.dataset.table.image_col].astype(str).to_numpy(),
            "true_label": self.labels,
            "predicted_label": self.predictions,
        })
        for k in range(self.probs.shape[1]):
            frame[f"probability_class_{k}"] = self.probs[:, k]
        return frame

    def panderm_predictions_frame(self) -> pd.DataFrame:
        """Per-sample predictions in the panderm schema (docs/OUTPUTS.md)."""
        table = self.dataset.table
        return predictions_frame(table.frame[table.image_col].to_numpy(), self.labels, self.probs,
                                 self.dataset.classnames)


def evaluate(
    encoder: Encoder,
    dataset: ZeroShotDataset,
    templates: Sequence[str] = SKIN_TEMPLATES,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    precision: str = "amp",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    n_bootstrap: int = 1000,
    seed: int = 42,
    reference: bool = False,
) -> ZeroShotResult:
    """Zero-shot metrics of one dataset.

    `reference` (the `src/main.py` door) computes as the reference does: under CUDA autocast the logits are
    rounded to the half type; with the amp / amp_bf16 precision on CPU the image tower runs under CPU autocast
    and the scores follow :func:`cpu_autocast_probs` (the text classifier stays float32 there, as the
    reference's classifier autocast is CUDA-only); two-class AUROC is the mean over both probability columns.
    """
    image_precision = cpu_autocast(precision) if reference else base_precision(precision)
    feats = extract_features(encoder, dataset.table.paths, "embed", batch_size=batch_size, num_workers=num_workers,
                             precision=image_precision, cache=cache, cache_dir=cache_dir)
    weights = class_embeddings(encoder, dataset.classnames, templates, cache=cache,
                               precision=base_precision(precision), cache_dir=cache_dir)
    mode = effective_precision(encoder.device, image_precision)
    if mode.startswith("cpu-"):
        rows = resolve_batch_size(encoder, batch_size, "embed", image_precision)  # the loader's batches
        probs = cpu_autocast_probs(feats.array, weights, autocast_dtype(mode), rows,
                                   embed_dtype(encoder, image_precision))
    else:
        dtype = reference_logits_dtype(encoder.device, precision) if reference else None
        probs = zero_shot_probs(feats.array, weights, logits_dtype=dtype)
    labels = dataset.table.labels
    names = dataset.report_metrics
    # The reference's roc_auc_score(one_hot, probs, average="macro") averages both columns of a two-class set.
    multi_class = "onehot" if reference else "ovr"
    metrics = classification_metrics(labels, probs, names, multi_class)
    ci = bootstrap_ci(labels, probs, names, n_resamples=n_bootstrap, seed=seed, multi_class=multi_class) \
        if n_bootstrap else {}
    return ZeroShotResult(dataset, probs, labels, metrics, ci)


def results_table(results: Sequence[ZeroShotResult]) -> list[dict]:
    """README-style rows: dataset, N, K, headline metric with CI, accuracy, weighted F1; plus the average."""
    rows = []
    for r in results:
        head = r.dataset.headline
        ci = r.ci.get(head)
        rows.append({
            "dataset": r.dataset.name,
            "N": len(r.labels),
            "K": len(r.dataset.classnames),
            "metric": "AUROC" if head == "auroc" else "ACC",
            "value": r.metrics[head],
            "95% CI": f"{ci['ci_low']:.4f}-{ci['ci_high']:.4f}" if ci else "",
            "acc": r.metrics["accuracy"],
            "wf1": r.metrics["weighted_f1"],
        })
    if len(results) > 1:
        rows.append({"dataset": "average", "N": "", "K": "", "metric": "", "value": float(np.mean([r["value"] for r in rows])),
                     "95% CI": "", "acc": "", "wf1": ""})
    return rows


def build_dataset(
    csv: str | os.PathLike,
    classnames: Sequence[str] | None = None,
    *,
    benchmark: Benchmark | None = None,
    image_col: str = "image_path",
    label_col: str = "label",
    root: str | os.PathLike | None = None,
    concat_prefix: str | None = None,
    name: str | None = None,
    check_images: bool = True,
    allow_outside_root: bool = False,
    split: str | None = None,
    split_col: str = "split",
    warn_unsplit: str | None = None,
) -> ZeroShotDataset:
    """Validate a CSV against its class list (before any model is loaded).

    `split` keeps only the rows whose `split_col` equals it. With `warn_unsplit` (the `panderm` CLI and the API;
    the reference door scores every row, as the reference does) a CSV that has a `split_col` column but no
    chosen split is scored whole, with one warning line ending in `warn_unsplit`: how the caller chooses a split.
    """
    if classnames is None:
        if benchmark is None:
            raise DataError(f"{csv}: a custom dataset needs its class names", param="classnames")
        classnames = benchmark.classnames
    classnames = tuple(classnames)
    if len(classnames) < 2:
        raise DataError(f"{csv}: zero-shot classification needs at least 2 class names, got {len(classnames)}")
    table = load_table(csv, image_col, root=root, label_col=label_col, classnames=classnames,
                       concat_prefix=concat_prefix, check=check_images,
                       allow_outside_root=allow_outside_root, split=split, split_col=split_col)
    if warn_unsplit and split is None and split_col in table.frame.columns:
        values = table.frame[split_col].astype(str).str.strip().value_counts()
        log.warning("%s: the CSV has a %r column (%s) but no split was chosen: scoring all %d rows; "
                    "choose one with %s to score it", csv, split_col,
                    ", ".join(f"{k} {v}" for k, v in values.items()), len(table), warn_unsplit)
    absent = [c for i, c in enumerate(classnames) if not (table.labels == i).any()]
    if absent:
        # Harmless for a test set missing a rare class; a class list that does not belong to the CSV (a file
        # with extra lines, names in another order) shows up here first.
        log.warning("%s: %d of %d class names have no image in the CSV: %s", csv, len(absent), len(classnames),
                    ", ".join(absent[:10]) + (f" (+{len(absent) - 10} more)" if len(absent) > 10 else ""))
    folder = benchmark.folder if benchmark is not None and benchmark.folder else "customized_dataset"
    return ZeroShotDataset(name or (benchmark.name if benchmark else Path(csv).stem), table, classnames, benchmark, folder,
                           split)


@dataclass(frozen=True)
class ZeroShotRun:
    """Every dataset of one zero-shot run of one model, in order (iterable like the list of results)."""

    results: tuple[ZeroShotResult, ...]
    random_init: bool = False

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def rows(self) -> list[dict]:
        return results_table(self.results)

    def to_json(self) -> dict:
        datasets = {r.dataset.name: {
            "csv": str(r.dataset.table.csv_path),
            "n": len(r.labels),
            "split": r.dataset.split,
            "classnames": list(r.dataset.classnames),
            "headline_metric": r.dataset.headline,
            "metrics": r.metrics,
            "ci95": r.ci,
            "reference_keys": r.reference_metrics(),
        } for r in self.results}
        summary = {"datasets": datasets}
        bench = {r.dataset.benchmark.name: r.metrics for r in self.results
                 if r.dataset.benchmark is not None and r.dataset.benchmark.readme_metric is not None}
        if bench:
            summary["readme_average"] = readme_average(bench)
        return summary

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """Per dataset predictions.csv, confusion_matrix.png and the analyses (calibration, and subgroups with
        `analysis.group_cols`; :mod:`panderm.analysis.attach`); the results.json body."""
        summary = self.to_json()
        for r in self.results:
            sub = out_dir / r.dataset.name
            write_csv(sub / "predictions.csv", r.panderm_predictions_frame())
            title = f"{r.dataset.name} zero-shot" + (" (RANDOM WEIGHTS)" if self.random_init else "")
            save_figure(sub / "confusion_matrix.png",
                        confusion_matrix_figure(r.labels, r.predictions, list(r.dataset.classnames), title=title))
            analyse(summary["datasets"][r.dataset.name], sub, r.labels, r.probs, r.dataset.table.frame, analysis,
                    classnames=list(r.dataset.classnames), title=f"{r.dataset.name} zero-shot")
        return summary


def run(encoder: Encoder, datasets: Sequence[ZeroShotDataset], templates: Sequence[str] = SKIN_TEMPLATES,
        **kwargs) -> ZeroShotRun:
    """Evaluate every dataset with one loaded model (each image encoded once, text once per class list)."""
    results = []
    for ds in datasets:
        log.info("zero-shot: %s (%d images, %d classes)", ds.name, len(ds.table), len(ds.classnames))
        results.append(evaluate(encoder, ds, templates, **kwargs))
    return ZeroShotRun(tuple(results), encoder.random_init)


def demo(encoder: Encoder, sample_root: Path, out_dir: Path) -> list[dict]:
    """The demo's zero-shot table: PAD-6, HAM-7 and PH2-2 on the bundled sample."""
    repo = sample_root.parent.parent
    folder = sample_root / "zero-shot-classification"
    datasets = [build_dataset(folder / csv, benchmark=get_benchmark(name), root=repo)
                for name, csv in (("PAD-6", "pad-zero-shot-test.csv"), ("HAM-7", "HAM-official-7-zero-shot-test.csv"),
                                  ("PH2-2", "ph2-2-zero-shot-test.csv"))]
    results = run(encoder, datasets, n_bootstrap=200)
    rows = results.rows()
    print("\nZero-shot classification (bundled sample, 8 skin templates)")
    print(format_table(rows))
    write_report(results, out_dir / "zeroshot", {"model": encoder.describe()}, encoder.random_init)
    return rows
