"""The reference segmentation recipe (PanDerm v1 `segmentation/run.py`, ref §1.9) on the toolkit's parts.

AdamW lr 1e-4, weight decay 0.05, cosine per epoch, 100 epochs, cross-entropy only, colour-only augmentation,
mean = std = 0.5, 224 px, batch size 1 (a flag), best checkpoint by validation Jaccard, test scored per image
after keeping the largest connected component, with the empty-truth centre-pixel rule, at 224×224; output
``results_<dataset>_<fold>_<seed>.json`` with ``Dsc`` and ``Jac`` (means over images, 0..1).

Differences, on purpose: a percent of the data takes a seeded subset of the sorted training images (the reference's
first x% of an unsorted glob is not reproducible); with batch size 1 the neck and head use GroupNorm, since
BatchNorm cannot normalise the 1×1 pyramid-pooling branch of a single image (the reference ran batch 1 on 2
GPUs with SyncBN, i.e. an effective batch of 2).
"""
from __future__ import annotations

import json
from pathlib import Path

SMOKE_IMAGES = {"train": 8, "val": 4, "test": 4}


def run_reference(model: str, checkpoint: str | None, dataset: str, parent_path: str, out_dir: str,
                  fold: int = 0, seed: int = 0, epochs: int = 100, batch_size: int = 1, lr: float = 1e-4,
                  percent: float = 100.0, image_size: int = 224, smoke_test: bool = False, device: str = "cpu",
                  csv: str | None = None, allow_random_init: bool = False, wandb_project: str | None = None) -> dict:
    from ...errors import DataError
    from ...models import load_encoder
    from ...report import write_json
    from .data import load_isic2018, load_seg_csv, percent_subset
    from .train import SegConfig, Segmenter

    if csv:
        tables = {s: load_seg_csv(csv, s) for s in ("train", "val", "test")}
    elif dataset.upper() == "ISIC2018":
        root = Path(parent_path).expanduser() / "ISIC2018"
        tables = {s: load_isic2018(root, s) for s in ("train", "val", "test")}
    else:
        raise DataError(f"dataset {dataset!r} is not supported: give ISIC2018 (folders under the parent path) or a "
                        "CSV of images and masks", param="dataset")
    if percent < 100:
        tables["train"] = percent_subset(tables["train"], percent, seed)
    if smoke_test:
        tables = {s: t.subset(range(min(len(t), SMOKE_IMAGES[s]))) for s, t in tables.items()}
        epochs = 1
    encoder = load_encoder(model, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init)
    cfg = SegConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=0.05, loss="ce", augment="colour",
                    seed=seed, image_size=image_size, head_channels=min(encoder_width(encoder), 1024),
                    norm="gn" if batch_size == 1 else "bn", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    import torch

    torch.manual_seed(seed)
    out = Path(out_dir)
    run = out / f"run_{dataset}_{fold}_{seed}"
    seg = Segmenter(encoder, cfg, run, device, tables["train"].num_classes)
    tracker = _wandb(wandb_project, cfg) if wandb_project else None
    def on_epoch(epoch: int) -> bool:
        if tracker is not None:
            tracker.log(seg_history_last(run))
        return False  # never stop early

    fit = seg.fit(tables["train"], tables["val"], resume=True, on_epoch=on_epoch)
    seg.load_weights(run / "best.pt")
    ev = seg.evaluate(tables["test"], n_bootstrap=0, native=False)
    result = {"Dsc": ev["at_model_size"]["dice"]["mean"], "Jac": ev["at_model_size"]["jaccard"]["mean"]}
    write_json(out / f"results_{dataset}_{fold}_{seed}.json", result)
    if tracker:
        tracker.log({"Test/Dsc": result["Dsc"], "Test/Jac": result["Jac"]})
        tracker.finish()
    return {**result, "best_epoch": fit.get("best_epoch"), "n_test": len(tables["test"])}


def encoder_width(encoder) -> int:
    from .model import build_taps

    return int(build_taps(encoder).width)


def seg_history_last(run: Path) -> dict:
    from ...checkpoint_io import load_training_checkpoint

    ck = load_training_checkpoint(run / "last.pt", ["history"], "segmentation checkpoint")
    return json.loads(ck["history"])[-1]


def _wandb(project: str, cfg):
    from dataclasses import asdict

    from ...errors import PandermError

    try:
        import wandb
    except ImportError:
        raise PandermError("wandb logging needs the wandb package: pip install wandb", param="wandb",
                           drop=True) from None
    return wandb.init(project=project, config=asdict(cfg))
