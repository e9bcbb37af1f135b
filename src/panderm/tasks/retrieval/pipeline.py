"""Retrieval runs: encode pairs (through the caches), rank, score, report."""
from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...data.images import open_image
from ...features import (
    _autocast, autocast_dtype, cpu_autocast, effective_precision, embed_dtype, extract_features, extract_text_features,
)
from ...models.base import Encoder
from ...report import format_table, save_figure, subplots, write_csv, write_report
from . import (
    argsort_bytes, argsort_fits, argsort_ranks, bootstrap_retrieval_ci, DEFAULT_KS, rank_metrics, reference_clip_loss,
    retrieval_metrics, RetrievalResult,
)
from .data import load_pairs, RetrievalPairs

log = logging.getLogger(__name__)
GROUP_MODES = ("auto", "none")


@dataclass(frozen=True)
class RetrievalRun:
    """One retrieval evaluation: the pairs, their ranks and metrics, the bootstrap CIs and the embeddings."""

    pairs: RetrievalPairs
    result: RetrievalResult
    ci: dict
    image_embeddings: np.ndarray
    text_embeddings: np.ndarray

    @property
    def metrics(self) -> dict:
        return self.result.metrics

    def rows(self) -> list[dict]:
        return results_rows(self.result, self.ci)

    def to_json(self) -> dict:
        return {"metrics": self.result.metrics, "ci95": self.ci, "csv": str(self.pairs.table.csv_path)}

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """ranks.csv and examples.png; the results.json body."""
        write_csv(out_dir / "ranks.csv", ranks_frame(self.pairs, self.result))
        save_figure(out_dir / "examples.png", examples_figure(self.pairs, self.image_embeddings, self.text_embeddings))
        return self.to_json()


@dataclass(frozen=True)
class ReferenceSettings:
    """How the reference door (`src/main.py`) encodes and ranks: its batch size (also the loss's batch), loader
    workers, precision, the feature cache (and its folder), and an optional group-by column (then ranked the
    duplicate-aware way)."""

    batch_size: int = 256
    workers: int = 0
    precision: str = "amp"
    cache: bool = True
    cache_dir: str | None = None
    group_by: str | None = None


def encode_pairs(encoder: Encoder, pairs: RetrievalPairs, *, batch_size: int = 64, num_workers=None,
                 precision: str = "amp", cache: bool = True, cache_dir=None,
                 text_batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    images = extract_features(encoder, pairs.table.paths, "embed", batch_size=batch_size, num_workers=num_workers,
                              precision=precision, cache=cache, cache_dir=cache_dir).array
    texts = extract_text_features(encoder, pairs.captions, batch_size=text_batch_size, precision=precision,
                                  cache=cache, cache_dir=cache_dir)
    return np.asarray(images, dtype=np.float32), texts


def groups_for(pairs: RetrievalPairs, mode: str) -> tuple[list | None, list | None]:
    """(image_groups, text_groups): none = reference (duplicates compete); auto = identical paths / captions
    and the group-by column are the same item."""
    if mode == "none" and pairs.group_values is None:
        return None, None
    image_groups = pairs.group_values if pairs.group_values is not None else [str(p) for p in pairs.table.paths]
    return image_groups, list(pairs.captions)


def evaluate(encoder: Encoder, pairs: RetrievalPairs, *, group_mode: str = "auto", ks=DEFAULT_KS,
             n_bootstrap: int = 1000, seed: int = 42, loss_batch_size: int = 256, **encode_kw) -> RetrievalRun:
    """Ranks, metrics and bootstrap CIs of `pairs` (`group_mode` "auto": identical images / captions and the group
    column are one item; "none": they compete, as in the reference); `encode_kw` goes to :func:`encode_pairs`."""
    img, txt = encode_pairs(encoder, pairs, **encode_kw)
    image_groups, text_groups = groups_for(pairs, group_mode)
    scale = getattr(encoder, "logit_scale", None)
    result = retrieval_metrics(img, txt, ks=ks, image_groups=image_groups, text_groups=text_groups,
                               logit_scale=scale, loss_batch_size=loss_batch_size)
    ci = bootstrap_retrieval_ci(result.image_to_text_ranks, result.text_to_image_ranks, ks, n_bootstrap, seed) \
        if n_bootstrap else {}
    return RetrievalRun(pairs, result, ci, img, txt)


def _output_dtypes(encoder: Encoder, pairs: RetrievalPairs, precision: str) -> tuple[torch.dtype, torch.dtype]:
    """The dtypes the image and text towers return under `precision`'s autocast (one dummy image, one caption)."""
    with torch.inference_mode(), _autocast(encoder.device, precision):
        text = encoder.encode_text(encoder.tokenize(pairs.captions[:1]).to(encoder.device)).dtype
    return embed_dtype(encoder, precision), text


def reference_result(encoder: Encoder, pairs: RetrievalPairs, settings: ReferenceSettings,
                     available_memory: int | None = None):
    """Ranks and loss as the reference's `evaluate` computes them (docs/REFERENCE.md, Retrieval): images and captions encoded
    in batches of the settings' batch size (under CPU autocast for the amp precisions on CPU), features L2-normalised in the
    towers' output dtype, the full-matrix argsort ranking (:func:`~.retrieval.argsort_ranks`) when N x N fits
    in half the available memory, block-wise counting with ties broken by row order above that (one warning).
    Returns (RetrievalResult, "argsort" | "chunked")."""
    precision = cpu_autocast(settings.precision)
    img, txt = encode_pairs(encoder, pairs, batch_size=settings.batch_size, num_workers=settings.workers,
                            precision=precision, cache=settings.cache, cache_dir=settings.cache_dir,
                            text_batch_size=settings.batch_size)
    mode = effective_precision(encoder.device, precision)
    cpu_dtype = autocast_dtype(mode) if mode.startswith("cpu-") else None
    img_dtype, txt_dtype = _output_dtypes(encoder, pairs, precision) if cpu_dtype else (torch.float32,) * 2
    with torch.inference_mode(), _autocast(torch.device("cpu"), precision if cpu_dtype else "fp32"):
        I = F.normalize(torch.from_numpy(np.array(img)).to(img_dtype), dim=-1)  # a copy: img may be a read-only map
        T = F.normalize(torch.from_numpy(np.array(txt)).to(txt_dtype), dim=-1)
    n = len(pairs)
    scale = getattr(encoder, "logit_scale", None)
    itemsize = torch.promote_types(I.dtype, T.dtype).itemsize
    if argsort_fits(n, itemsize, available_memory):
        r_i2t, r_t2i = argsort_ranks(I, T, scale if scale is not None else 1.0)
        path = "argsort"
    else:
        log.warning("retrieval: the reference's %d x %d argsort needs %.1f GB, more than half the free memory: "
                    "ranks counted block by block, exact ties broken by row order (docs/REFERENCE.md)",
                    n, n, argsort_bytes(n, itemsize) / 1e9)
        result = retrieval_metrics(I.float(), T.float())
        r_i2t, r_t2i = result.image_to_text_ranks, result.text_to_image_ranks
        path = "chunked"
    metrics = rank_metrics(r_i2t, DEFAULT_KS, "image_to_text")
    metrics.update(rank_metrics(r_t2i, DEFAULT_KS, "text_to_image"))
    metrics["mean_recall"] = (metrics["image_to_text_mean_recall"] + metrics["text_to_image_mean_recall"]) / 2
    if scale is not None:
        metrics["clip_val_loss"] = reference_clip_loss(I, T, scale, settings.batch_size, cpu_dtype)
    metrics["num_samples"] = metrics["num_images"] = metrics["num_texts"] = n
    rows = np.arange(n)
    return RetrievalResult(metrics, r_i2t, r_t2i, rows, rows), path


def reference_metrics(encoder: Encoder, pairs: RetrievalPairs, settings: ReferenceSettings) -> dict:
    """The reference door's retrieval keys (open_clip's `evaluate` order), then our R@1 and mean-recall keys."""
    if settings.group_by:
        result = evaluate(encoder, pairs, group_mode="auto", n_bootstrap=0, batch_size=settings.batch_size,
                          num_workers=settings.workers, precision=cpu_autocast(settings.precision),
                          cache=settings.cache, cache_dir=settings.cache_dir, loss_batch_size=settings.batch_size,
                          text_batch_size=settings.batch_size).result
    else:
        result, _ = reference_result(encoder, pairs, settings)
    m = result.metrics
    keys = [f"{d}_{k}" for d in ("image_to_text", "text_to_image")
            for k in ("mean_rank", "median_rank", "R@5", "R@10", "R@50")]
    out = {k: m[k] for k in keys}
    if "clip_val_loss" in m:
        out["clip_val_loss"] = m["clip_val_loss"]
    out["epoch"] = 0  # open_clip's evaluate order: ..., clip_val_loss, epoch, num_samples
    out["num_samples"] = m["num_samples"]
    out.update({k: m[k] for k in ("image_to_text_R@1", "text_to_image_R@1", "image_to_text_mean_recall",
                                  "text_to_image_mean_recall", "mean_recall")})
    return out


def ranks_frame(pairs: RetrievalPairs, result: RetrievalResult) -> pd.DataFrame:
    return pd.DataFrame({
        pairs.table.image_col: pairs.table.frame[pairs.table.image_col].astype(str).to_numpy(),
        pairs.caption_col: pairs.captions,
        "image_to_text_rank": result.image_to_text_row_ranks + 1,
        "text_to_image_rank": result.text_to_image_row_ranks + 1,
    })


def examples_data(pairs: RetrievalPairs, img: np.ndarray, txt: np.ndarray, n_queries: int = 3, k: int = 5,
                  width: int = 100) -> list[dict]:
    """What examples.png shows: for a few image queries, the top-k *distinct* captions by score (a caption
    repeated on several rows is listed once, at its best score), each wrapped to `width` characters
    (never cut), with whether it is the query's own caption."""
    i = img / np.linalg.norm(img, axis=1, keepdims=True)
    t = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    queries = np.unique(np.linspace(0, len(pairs) - 1, n_queries).astype(int))
    out = []
    for q in queries:
        captions, seen = [], set()
        for j in np.argsort(-(t @ i[q]), kind="stable"):
            text = pairs.captions[j]
            if text in seen:
                continue
            seen.add(text)
            captions.append({"rank": len(captions) + 1, "text": text, "hit": text == pairs.captions[q],
                             "lines": textwrap.wrap(text, width) or [""]})
            if len(captions) == k:
                break
        out.append({"query": int(q), "image": str(pairs.table.paths[q]), "captions": captions})
    return out


def examples_figure(pairs: RetrievalPairs, img: np.ndarray, txt: np.ndarray, n_queries: int = 3, k: int = 5):
    """A few image queries with their top-k distinct captions, wrapped (✓ = the query's own caption)."""
    data = examples_data(pairs, img, txt, n_queries=n_queries, k=k)
    heights = [max(3.2, 0.16 * sum(len(c["lines"]) + 0.5 for c in d["captions"]) + 0.6) for d in data]
    fig, axes = subplots(len(data), 2, figsize=(12, sum(heights)),
                             gridspec_kw={"width_ratios": [1, 3], "height_ratios": heights})
    axes = np.atleast_2d(axes)
    for row, d in enumerate(data):
        axes[row, 0].imshow(open_image(d["image"]))
        axes[row, 0].set_title(Path(d["image"]).name, fontsize=8)
        axes[row, 0].axis("off")
        lines = []
        for c in d["captions"]:
            head = ("✓ " if c["hit"] else "  ") + f"{c['rank']}. "
            lines.append(head + c["lines"][0])
            lines.extend(" " * len(head) + rest for rest in c["lines"][1:])
        axes[row, 1].text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=7)
        axes[row, 1].axis("off")
    fig.suptitle(f"image → text: top-{k} distinct captions")
    return fig


def results_rows(result: RetrievalResult, ci: dict) -> list[dict]:
    """One row per direction plus their average mean recall (with its bootstrap CI)."""
    m = result.metrics
    rows = []
    for d in ("image_to_text", "text_to_image"):
        entry = ci.get(f"{d}_mean_recall")
        rows.append({"direction": d, **{f"R@{k}": m[f"{d}_R@{k}"] for k in DEFAULT_KS},
                     "mean rank": m[f"{d}_mean_rank"], "median rank": m[f"{d}_median_rank"],
                     "mean recall": m[f"{d}_mean_recall"],
                     "95% CI": f"{entry['ci_low']:.3f}-{entry['ci_high']:.3f}" if entry else ""})
    entry = ci.get("mean_recall")
    rows.append({"direction": "average", **{f"R@{k}": "" for k in DEFAULT_KS}, "mean rank": "", "median rank": "",
                 "mean recall": m["mean_recall"],
                 "95% CI": f"{entry['ci_low']:.3f}-{entry['ci_high']:.3f}" if entry else ""})
    return rows


def demo(encoder: Encoder, sample_root: Path, out_dir: Path) -> list[dict]:
    """Retrieval on PH2 with its criteria sentences (built from expert annotations, NOT real captions)."""
    pairs = load_pairs(sample_root / "ph2" / "ph2.csv", "image_path", "concept_text")
    run = evaluate(encoder, pairs, n_bootstrap=200)
    rows = run.rows()
    print("\nImage-text retrieval (PH2 criteria sentences, template text not real captions; duplicates grouped)")
    print(format_table(rows, floatfmt=".3f"))
    write_report(run, out_dir / "retrieval", {"model": encoder.describe()}, encoder.random_init)
    return rows
