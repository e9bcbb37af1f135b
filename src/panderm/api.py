"""The Python API: load any model once, then classify, embed or compare.

    from panderm import PanDerm2
    model = PanDerm2.from_pretrained("hf-hub:redlessone/PanDerm2")      # any model id
    model.zero_shot_classify("lesion.jpg", ["melanoma", "nevus"])        # {class: probability}
    model.zero_shot_classify(["a.jpg", "b.jpg"], classes)                # one dict per image
    model.evaluate_zero_shot("test.csv", classnames)                      # metrics on a labelled CSV
    model.linear_probe("lp.csv", percent_data=(0.1, 1.0), seeds=3)        # frozen-feature probe
    model.retrieval("pairs.csv", caption_col="caption")                   # image<->text recall@K

It uses the model's own preprocessing, RGB images with EXIF orientation applied,
and the same classifier as the zero-shot task (normalised prompt embeddings
averaged over templates, softmax of 100 · cosine).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .data.benchmarks import get_benchmark
from .data.images import open_image, to_rgb
from .data.templates import SKIN_TEMPLATES
from .errors import PandermError
from .models import Encoder, load_encoder
from .runtime import resolve_device
from .tasks import zeroshot
from .tasks.linear_probe import pipeline as lp, solver_tol
from .tasks.retrieval import pipeline as retrieval_run
from .tasks.retrieval.data import load_pairs
from .tasks.zeroshot import class_embeddings, zero_shot_probs

ImageLike = Union[str, os.PathLike, Image.Image]


class Model:
    """A loaded encoder with task-level helpers."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    @classmethod
    def from_pretrained(cls, model_id: str, checkpoint: str | None = None, device: str = "auto",
                        allow_random_init: bool = False, full_decode: bool = False) -> "Model":
        """Load `model_id` (required, as the model is on the command line: an alias such as ``"PanDerm2"``,
        ``"hf-hub:ORG/NAME"``, ``"local-dir:PATH"``, ...; ``"demo"`` is a tiny random-weight model).

        ``device="auto"`` picks CUDA when present, else CPU; a named device that is not there is an error.
        Dataset evaluations decode JPEGs at a reduced DCT scale (still at least twice the model input; much
        faster on large photos); ``full_decode=True`` decodes them fully, as the reference does.
        """
        encoder = load_encoder(model_id, checkpoint=checkpoint, device=resolve_device(device, flag="device"),
                               allow_random_init=allow_random_init)
        encoder.set_draft_decode(not full_decode)
        return cls(encoder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder.model_id!r}, family={self.encoder.family!r})"

    def _pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        tensors = []
        spec = self.encoder.preprocess_spec  # decoded as the dataset evaluations decode (draft, EXIF)
        for img in images:
            pil = to_rgb(img) if isinstance(img, Image.Image) else open_image(img, exif=spec.exif_transpose,
                                                                             draft=spec.draft_size)
            tensors.append(self.encoder.preprocess(pil))
        return torch.stack(tensors).to(self.encoder.device)

    @torch.inference_mode()
    def encode_images(self, images: ImageLike | Sequence[ImageLike], kind: str = "embed", normalize: bool = True,
                      batch_size: int = 32) -> np.ndarray:
        """[N, D] float32 embeddings (L2-normalised unless `normalize=False`).

        A file path is decoded as the dataset evaluations decode it (reduced-size JPEG decoding unless the model
        was loaded with ``full_decode=True``); an in-memory PIL image is used as it is."""
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        out = []
        for start in range(0, len(items), batch_size):
            emb = self.encoder.encode_image(self._pixels(items[start:start + batch_size]), kind).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1) if normalize else emb)
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        emb = self.encoder.encode_text(self.encoder.tokenize(texts).to(self.encoder.device)).float()
        return (torch.nn.functional.normalize(emb, dim=-1) if normalize else emb).cpu().numpy()

    def zero_shot_classify(self, images: ImageLike | Sequence[ImageLike], classnames: Sequence[str],
                           templates: Sequence[str] | None = None) -> dict[str, float] | list[dict[str, float]]:
        """Class probabilities for one image (a dict) or a list of images (a list of dicts)."""
        _check_lists(classnames=classnames, templates=templates)
        single = isinstance(images, (str, os.PathLike, Image.Image))
        weights = class_embeddings(self.encoder, list(classnames), list(templates or SKIN_TEMPLATES))
        probs = zero_shot_probs(self.encode_images(images, normalize=False), weights)
        rows = [{c: float(p) for c, p in zip(classnames, row)} for row in probs]
        return rows[0] if single else rows

    # -- dataset-level evaluations (the same library functions as the CLI; features go through the cache) --
    def evaluate_zero_shot(self, csv: str | os.PathLike | None = None, classnames: Sequence[str] | None = None, *,
                           benchmark: str | None = None, data_root: str | os.PathLike = ".",
                           image_col: str = "image_path", label_col: str = "label", root=None,
                           templates: Sequence[str] | None = None, n_bootstrap: int = 1000, seed: int = 42,
                           batch_size: int = 64, cache: bool = True, allow_outside_root: bool = False,
                           split: str | None = None) -> dict:
        """Zero-shot metrics (and bootstrap CIs) on a labelled CSV or one of the reference benchmarks.

        ``split="test"`` scores only the rows whose ``split`` column says so; without it every row is scored (one
        warning when the CSV has a ``split`` column).

        Returns ``{"dataset", "n", "classnames", "metrics", "ci", "probs", "labels"}``.
        """
        _check_lists(classnames=classnames, templates=templates)
        if (csv is None) == (benchmark is None):
            raise PandermError("give either a csv (with classnames) or a benchmark name")
        if benchmark is not None:
            bench = get_benchmark(benchmark)
            ds = zeroshot.build_dataset(bench.csv_path(data_root), benchmark=bench, image_col=image_col,
                                        label_col=label_col, root=root or data_root,
                                        allow_outside_root=allow_outside_root, split=split, warn_unsplit="split=")
        else:
            ds = zeroshot.build_dataset(csv, classnames, image_col=image_col, label_col=label_col, root=root,
                                        allow_outside_root=allow_outside_root, split=split, warn_unsplit="split=")
        r = zeroshot.evaluate(self.encoder, ds, list(templates or SKIN_TEMPLATES), batch_size=batch_size,
                              cache=cache, n_bootstrap=n_bootstrap, seed=seed)
        return {"dataset": ds.name, "n": len(r.labels), "classnames": list(ds.classnames), "metrics": r.metrics,
                "ci": r.ci, "probs": r.probs, "labels": r.labels}

    def linear_probe(self, csv: str | os.PathLike, *, percent_data: Sequence[float] = (1.0,), seeds: int = 1,
                     shots: Sequence[int] | None = None, tune_c: bool = False, C: float | None = None,
                     solver: str = "fast", kind: str = "auto", normalize: bool = False,
                     image_col: str = "image_path",
                     label_col: str = "label", split_col: str = "split", root=None, n_bootstrap: int = 1000,
                     batch_size: int = 64, cache: bool = True, allow_outside_root: bool = False) -> dict:
        """The linear probe on a CSV with a train/val/test split column (:mod:`panderm.tasks.linear_probe`).

        ``kind="auto"`` probes the feature the reference used for this model family (``kind="embed"`` /
        ``"features"`` pick one, L2-normalised with ``normalize=True``); ``solver="reference"``
        keeps the reference's L-BFGS stopping rule. Returns :func:`panderm.tasks.linear_probe.run_linear_probe`'s
        dict (``runs``, ``summary``, ...) plus ``"kind"`` and ``"normalized"``.
        """
        tol = solver_tol(solver)
        splits = lp.load_splits(csv, image_col, label_col, split_col, root=root,
                                allow_outside_root=allow_outside_root)
        feature, norm = lp.reference_feature(self.encoder) if kind == "auto" else (kind, normalize)
        result = lp.run(self.encoder, splits, feature, norm, percent_data=tuple(percent_data),
                        seeds=tuple(range(seeds)), shots=shots, tune_c=tune_c, C=C, n_bootstrap=n_bootstrap,
                        tol=tol,
                        extract_kw=dict(batch_size=batch_size, cache=cache))
        return {**result.probe, "kind": result.kind, "normalized": result.normalized}

    def retrieval(self, csv: str | os.PathLike, *, image_col: str = "image_path", caption_col: str = "caption",
                  root=None, group_by: str | None = None, duplicates: str = "auto", n_bootstrap: int = 1000,
                  seed: int = 42, batch_size: int = 64, cache: bool = True,
                  allow_outside_root: bool = False) -> dict:
        """Image↔text retrieval metrics (R@K, mean/median rank, both directions) with bootstrap CIs.

        ``duplicates="auto"`` counts identical images / captions (or a ``group_by`` column) as one item;
        ``"none"`` lets them compete, as the reference does.
        """
        pairs = load_pairs(csv, image_col, caption_col, root=root, group_by=group_by,
                           allow_outside_root=allow_outside_root)
        run = retrieval_run.evaluate(self.encoder, pairs, group_mode=duplicates, n_bootstrap=n_bootstrap, seed=seed,
                                     batch_size=batch_size, cache=cache)
        return {"n": len(pairs.captions), "metrics": run.metrics, "ci": run.ci}


def _check_lists(**named) -> None:
    """A plain string where a list is expected would be split into characters: refuse it."""
    for name, value in named.items():
        if isinstance(value, str):
            raise PandermError(f"{name} must be a list of strings, got the string {value!r}")


# The name the PanDerm-2 README advertises; it loads any supported model id.
PanDerm2 = Model
