"""Segmentation's result: `SegmentationRun`, a `report.TaskRun` (per_image.csv, predictions/ PNGs at each mask's
resolution, overlay.png and the results.json body)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.images import open_image
from ...report import atomic_path, save_figure, write_csv
from .data import SegTable, read_mask
from .metrics import postprocess

_SUMMARY = ("dice", "jaccard", "hd95", "pixel_accuracy")


def write_predictions(folder: Path, probs: torch.Tensor, table: SegTable, keep_largest: bool = True) -> list[Path]:
    """One PNG per image at its mask's resolution: 0/255 for binary masks, class ids otherwise."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(len(table)):
        with Image.open(table.masks[i]) as m:
            w, h = m.size
        p = F.interpolate(probs[i].float()[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        labels = postprocess(p.argmax(0).numpy().astype(np.uint8), table.num_classes, keep_largest)
        if table.binary:
            labels = (labels > 0).astype(np.uint8) * 255
        path = folder / f"{table.ids[i]}.png"
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(labels).save(tmp, format="PNG")
        written.append(path)
    return written


def overlay_figure(table: SegTable, probs: torch.Tensor, rows: list[dict], n_first: int = 4, n_worst: int = 4):
    """A matplotlib Figure: image with the truth (green) and prediction (red) contours, for the first cases
    and the worst ones by Jaccard. Built with the object API: no global backend is switched."""
    from matplotlib.figure import Figure
    from PIL import Image

    first = list(range(min(n_first, len(table))))
    worst = [i for i in np.argsort([r["jaccard"] for r in rows], kind="stable") if i not in first][:n_worst]
    picks = [(i, "") for i in first] + [(int(i), "worst ") for i in worst]
    cols = max(1, min(4, len(picks)))
    nrows = max(1, math.ceil(len(picks) / cols))
    fig = Figure(figsize=(3 * cols, 3 * nrows))
    for n, (i, tag) in enumerate(picks):
        ax = fig.add_subplot(nrows, cols, n + 1)
        img = open_image(table.images[i], exif=False)
        truth = read_mask(table.masks[i], None if table.binary else table.num_classes)
        p = F.interpolate(probs[i].float()[None], size=truth.shape, mode="bilinear", align_corners=False)[0]
        pred = postprocess(p.argmax(0).numpy().astype(np.uint8), table.num_classes)
        ax.imshow(np.asarray(img.resize((truth.shape[1], truth.shape[0]), Image.BILINEAR)))
        if truth.any():
            ax.contour(truth > 0, levels=[0.5], colors="lime", linewidths=1.2)
        if pred.any():
            ax.contour(pred > 0, levels=[0.5], colors="red", linewidths=1.2)
        ax.set_title(f"{tag}{table.ids[i]}  Jac {rows[i]['jaccard']:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("truth (green) vs prediction (red)", fontsize=9)
    return fig


@dataclass
class SegmentationRun:
    """One evaluated split (`ev` = `Segmenter.evaluate(table)`), or a training run without a test split
    (`ev=None`: results.json holds `info` alone). `info`: what the command knows (task, split, best epoch, ...)."""
    info: dict = field(default_factory=dict)
    ev: dict | None = None
    table: SegTable | None = None
    keep_largest: bool = True

    def to_json(self) -> dict:
        ev = self.ev
        if ev is None:
            return dict(self.info)
        body = {"n_images": ev["n_images"], "image_size": ev["image_size"],
                "metrics_at_model_size": ev["at_model_size"], **self.info}
        if "at_mask_size" in ev:
            body["metrics_at_mask_size"] = ev["at_mask_size"]
        return body

    def rows(self) -> list[dict]:
        if self.ev is None:
            return []
        split = self.info.get("split", "test")
        return [{"split": split, "scale": scale, **{k: self.ev[key][k]["mean"] for k in _SUMMARY}}
                for scale, key in (("model_size", "at_model_size"), ("mask_size", "at_mask_size")) if key in self.ev]

    def write_files(self, out_dir: Path, analysis=None) -> dict:
        """per_image.csv, predictions/<id>.png and overlay.png (nothing without `ev`); the results.json body."""
        import pandas as pd

        out, ev = Path(out_dir), self.ev
        if ev is not None:
            frame = pd.DataFrame(ev["per_image"])
            if "per_image_native" in ev:
                nat = pd.DataFrame(ev["per_image_native"]).drop(columns=["id"]).add_suffix("_at_mask_size")
                frame = pd.concat([frame, nat], axis=1)
            write_csv(out / "per_image.csv", frame, index=False)
            write_predictions(out / "predictions", ev["probs"], self.table, self.keep_largest)
            save_figure(out / "overlay.png", overlay_figure(self.table, ev["probs"], ev["per_image"]))
        return self.to_json()
