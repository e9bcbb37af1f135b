"""Per-image segmentation metrics, the reference's post-processing, and bootstrap summaries.

Definitions (MedPy's, restated; the reference scores with ``medpy.metric.binary.dc`` / ``jc``):

- Dice = 2|P∩T| / (|P| + |T|); 0 when both are empty (MedPy returns 0 there).
- Jaccard = |P∩T| / |P∪T|; 0 when both are empty (MedPy divides by zero; with the empty-truth rule
  below the truth is never empty, so the case does not arise in the reference protocol).
- HD95: the 95th percentile of the pooled surface distances P→T and T→P, surfaces being a mask minus its
  erosion by the 4-neighbour cross (MedPy's ``hd95``); undefined (NaN) when either mask is empty.
- Pixel accuracy: the fraction of pixels whose label equals the truth.

Reference post-processing (ref §1.9): the prediction keeps only its **largest connected component**
(8-connectivity here, as ``skimage.measure.label`` and ``cv2.connectedComponents`` count by default),
and an **empty truth** gets its centre pixel set to lesion before scoring.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ...metrics import bootstrap_indices

METRICS = ("dice", "jaccard", "hd95", "pixel_accuracy")
_EIGHT = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a binary mask (ties: the one met first in raster order)."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def centre_pixel_rule(truth: np.ndarray) -> np.ndarray:
    """The reference's empty-truth rule: an all-background truth gets its centre pixel (H//2, W//2) set."""
    truth = np.asarray(truth, dtype=bool)
    if truth.any():
        return truth
    out = truth.copy()
    out[truth.shape[0] // 2, truth.shape[1] // 2] = True
    return out


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    den = int(p.sum()) + int(t.sum())
    return 0.0 if den == 0 else 2.0 * int((p & t).sum()) / den


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    union = int((p | t).sum())
    return 0.0 if union == 0 else int((p & t).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=cross, iterations=1)


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if not p.any() or not t.any():
        return float("nan")
    sp, st = _surface(p), _surface(t)
    d_pt = ndimage.distance_transform_edt(~st)[sp]
    d_tp = ndimage.distance_transform_edt(~sp)[st]
    return float(np.percentile(np.concatenate([d_pt, d_tp]), 95))


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(truth)))


def postprocess(labels: np.ndarray, num_classes: int = 2, keep_largest: bool = True) -> np.ndarray:
    """Keep the largest component of each foreground class; the removed pixels become background."""
    labels = np.asarray(labels)
    if not keep_largest:
        return labels
    out = np.zeros_like(labels)
    for c in range(1, num_classes):
        out[largest_component(labels == c)] = c
    return out


def score_image(pred: np.ndarray, truth: np.ndarray, num_classes: int = 2, keep_largest: bool = True,
                empty_rule: bool = True) -> dict[str, float]:
    """Dice, Jaccard, HD95 (mean over the foreground classes) and pixel accuracy of one label map.

    `pred` is the argmax label map before post-processing; `truth` the class-id mask, same shape.
    """
    pred = postprocess(pred, num_classes, keep_largest)
    truth = np.asarray(truth)
    d, j, h = [], [], []
    for c in range(1, num_classes):
        t = truth == c
        if empty_rule:
            t = centre_pixel_rule(t)
        p = pred == c
        d.append(dice(p, t))
        j.append(jaccard(p, t))
        h.append(hd95(p, t))
    h_ok = [v for v in h if np.isfinite(v)]
    return {"dice": float(np.mean(d)), "jaccard": float(np.mean(j)),
            "hd95": float(np.mean(h_ok)) if h_ok else float("nan"),
            "pixel_accuracy": pixel_accuracy(pred, truth)}


def summarize(per_image: Sequence[dict], n_resamples: int = 1000, seed: int = 42,
              metrics: Iterable[str] = METRICS) -> dict[str, dict]:
    """Mean over images with a percentile bootstrap 95% CI (images resampled i.i.d.).

    NaN values (HD95 with an empty prediction) are left out of that metric's mean; `n_undefined` counts them.
    """
    out = {}
    n = len(per_image)
    idx = bootstrap_indices(n, n_resamples, seed) if n and n_resamples else None
    for name in metrics:
        values = np.array([float(r[name]) for r in per_image], dtype=float)
        ok = np.isfinite(values)
        entry = {"mean": float(values[ok].mean()) if ok.any() else float("nan"), "n": int(ok.sum()),
                 "n_undefined": int((~ok).sum())}
        if idx is not None and ok.any():
            vals = np.where(ok, values, 0.0)
            sums = vals[idx].sum(axis=1)
            counts = ok[idx].sum(axis=1)
            reps = sums[counts > 0] / counts[counts > 0]
            entry.update(ci_low=float(np.percentile(reps, 2.5)), ci_high=float(np.percentile(reps, 97.5)),
                         n_resamples=int(len(reps)))
        out[name] = entry
    return out
