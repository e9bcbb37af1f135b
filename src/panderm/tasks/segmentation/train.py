"""Training and evaluation of a segmentation model on validated (image, mask) tables.

Recipe (`SegConfig` defaults; the reference door overrides them with the reference's): AdamW (lr 1e-4,
weight decay 0.05), cosine annealing stepped per epoch (T_max = epochs), cross-entropy (optionally + soft
Dice), augmentation `geometric` (random flips and 90° rotations applied to image and mask together),
`colour` (the reference's colour-only jitter) or `none`; images squashed to `image_size`² (bilinear), masks
resized with nearest neighbour. The checkpoint with the best validation Jaccard (reference post-processing)
is kept as best.pt; last.pt (model, optimiser, schedule, RNG, history) lets `resume` continue a run.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ...data.images import open_image
from ...progress import track
from ...runtime import grad_scaler, training_autocast
from ...training import load_training_checkpoint, restore_training_state, rng_state, save_training_checkpoint
from ...training import seeded_generator as _generator
from ...errors import ModelError, PandermError, require_finite
from .data import SegTable, read_mask
from .metrics import score_image, summarize
from .model import SegmentationModel

log = logging.getLogger("panderm")
AUGMENTS = ("geometric", "colour", "geometric+colour", "none")
LOSSES = ("ce", "ce+dice")


@dataclass
class SegConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.05
    loss: str = "ce"
    augment: str = "geometric"
    freeze_encoder: bool = False
    percent_data: float = 100.0
    seed: int = 0
    image_size: int = 224
    head_channels: int = 256
    norm: str = "bn"
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    precision: str = "amp"
    workers: int = 0
    keep_largest: bool = True
    empty_rule: bool = True

    def check(self) -> None:
        require_finite(self)
        if self.epochs < 1:
            raise PandermError(f"epochs must be at least 1, got {self.epochs}", param="epochs")
        if self.batch_size < 1:
            raise PandermError(f"the batch size must be at least 1, got {self.batch_size}", param="batch_size")
        if self.loss not in LOSSES:
            raise PandermError(f"the loss must be one of {', '.join(LOSSES)}, got {self.loss!r}", param="loss")
        if self.augment not in AUGMENTS:
            raise PandermError(f"the augmentation must be one of {', '.join(AUGMENTS)}, got {self.augment!r}",
                               param="augment")
        if self.image_size < 16:
            raise PandermError(f"the image size must be at least 16, got {self.image_size}", param="image_size")
        if not 0 < self.percent_data <= 100:
            raise PandermError(f"the percent of training data must be in (0, 100], got {self.percent_data}",
                               param="percent_data")


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
class SegDataset(Dataset):
    """(image [3, S, S] normalised, mask [S, S] long, index); decoded and resized images are kept in memory."""

    def __init__(self, table: SegTable, size: int, mean, std, augment: str = "none", cache: bool = True):
        self.table, self.size, self.augment, self.cache = table, size, augment, cache
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self._store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.table)

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in self._store:
            return self._store[i]
        from PIL import Image

        img = open_image(self.table.images[i], exif=False).resize((self.size, self.size), Image.BILINEAR)
        labels = read_mask(self.table.masks[i], None if self.table.binary else self.table.num_classes)
        mask = Image.fromarray(labels).resize((self.size, self.size), Image.NEAREST)
        item = (torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous(),
                torch.from_numpy(np.asarray(mask).astype(np.int64)))
        if self.cache:
            self._store[i] = item
        return item

    def __getitem__(self, i: int):
        img, mask = self._load(i)
        x = img.float() / 255.0
        if "colour" in self.augment:
            x = colour_jitter(x)
        if "geometric" in self.augment:
            x, mask = geometric(x, mask)
        return (x - self.mean) / self.std, mask, i


def geometric(x: torch.Tensor, mask: torch.Tensor):
    """Random horizontal / vertical flips and a random multiple of 90°, the same for image and mask."""
    if torch.rand(()) < 0.5:
        x, mask = x.flip(-1), mask.flip(-1)
    if torch.rand(()) < 0.5:
        x, mask = x.flip(-2), mask.flip(-2)
    k = int(torch.randint(0, 4, ()))
    if k:
        x, mask = torch.rot90(x, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
    return x.contiguous(), mask.contiguous()


def colour_jitter(x: torch.Tensor) -> torch.Tensor:
    """The reference's colour-only augmentation: ColorJitter(0.2, 0.2, 0.2, 0.2), then grayscale, autocontrast
    and invert, each with probability 0.2 (torchvision ops on a [3, H, W] float image in [0, 1])."""
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF

    x = T.ColorJitter(0.2, 0.2, 0.2, 0.2)(x)
    if torch.rand(()) < 0.2:
        x = TF.rgb_to_grayscale(x, 3)
    if torch.rand(()) < 0.2:
        x = TF.autocontrast(x)
    if torch.rand(()) < 0.2:
        x = TF.invert(x)
    return x


def _worker_init(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def loader(ds: Dataset, batch: int, shuffle: bool, seed: int, workers: int, drop_last: bool = False):
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
                      generator=_generator(seed) if shuffle else None, worker_init_fn=_worker_init,
                      persistent_workers=False)


# --------------------------------------------------------------------------- #
# Loss, autocast
# --------------------------------------------------------------------------- #
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over foreground classes of the batch soft Dice."""
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    den = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    d = (2 * inter + eps) / (den + eps)
    return 1 - d[1:].mean()


def seg_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    loss = F.cross_entropy(logits.float(), target)
    if kind == "ce+dice":
        loss = loss + soft_dice_loss(logits, target)
    return loss


# --------------------------------------------------------------------------- #
# Prediction and scoring
# --------------------------------------------------------------------------- #
@torch.no_grad()
def predict_probs(model: SegmentationModel, ds: SegDataset, batch: int, device, precision: str = "fp32"):
    """Softmax probabilities [N, K, S, S] (float16 on CPU to bound memory) in dataset order."""
    model.eval()
    out = []
    for x, _, _ in loader(ds, batch, False, 0, 0):
        with training_autocast(device, precision):
            logits = model(x.to(device))
        out.append(logits.float().softmax(dim=1).cpu().to(torch.float16))
    return torch.cat(out) if out else torch.empty(0)


def score(probs: torch.Tensor, table: SegTable, size: int, keep_largest: bool = True, empty_rule: bool = True,
          native: bool = False) -> list[dict]:
    """Per-image metrics at the model's `size` (the reference: 224×224, nearest-resized truth) or, with
    `native`, at each mask's own resolution (probabilities resized bilinearly)."""
    from PIL import Image

    rows = []
    k = table.num_classes
    for i in range(len(table)):
        truth = read_mask(table.masks[i], None if table.binary else k)
        p = probs[i].float()
        if native:
            p = F.interpolate(p[None], size=truth.shape, mode="bilinear", align_corners=False)[0]
        else:
            truth = np.asarray(Image.fromarray(truth).resize((size, size), Image.NEAREST))
        pred = p.argmax(dim=0).numpy().astype(np.uint8)
        rows.append({"id": table.ids[i], **score_image(pred, truth, k, keep_largest, empty_rule)})
    return rows


def mean_jaccard(rows: list[dict]) -> float:
    return float(np.mean([r["jaccard"] for r in rows])) if rows else float("nan")


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
class Segmenter:
    def __init__(self, encoder, cfg: SegConfig, out: Path, device="cpu", num_classes: int = 2):
        cfg.check()
        self.cfg, self.out, self.device = cfg, Path(out), torch.device(device)
        self.num_classes = num_classes
        torch.manual_seed(cfg.seed)
        self.model = SegmentationModel(encoder, num_classes, cfg.head_channels, cfg.norm,
                                       cfg.freeze_encoder).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs)
        self.scaler = grad_scaler(self.device, cfg.precision)

    def dataset(self, table: SegTable, train: bool) -> SegDataset:
        c = self.cfg
        return SegDataset(table, c.image_size, c.mean, c.std, c.augment if train else "none")

    def _checkpoint(self, epoch: int, best: float, best_epoch: int, history: list) -> dict:
        return {"model": self.model.trainable_state(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": epoch,
                "best_jaccard": best, "best_epoch": best_epoch, "history": json.dumps(history),
                "config": json.dumps(asdict(self.cfg)), "encoder_fingerprint": self.model.encoder.fingerprint,
                "rng": rng_state()}

    def load_weights(self, path: Path) -> dict:
        ck = load_training_checkpoint(path, ("model", "encoder_fingerprint"), "segmentation checkpoint")
        if self.cfg.freeze_encoder and ck["encoder_fingerprint"] != self.model.encoder.fingerprint:
            raise ModelError(f"{path} was trained on another encoder (fingerprint {ck['encoder_fingerprint']}, "
                             f"this one is {self.model.encoder.fingerprint}); load the same model and checkpoint",
                             param="checkpoint")
        missing, unexpected = self.model.load_state_dict(ck["model"], strict=False)
        expected = set(self.model.trainable_state())
        missing = [k for k in missing if k in expected]
        if missing or unexpected:
            raise ModelError(f"{path}: checkpoint does not match this model: missing {missing[:3]}, "
                             f"unexpected {list(unexpected)[:3]}")
        return ck

    def fit(self, train: SegTable, val: SegTable, resume: bool = False, on_epoch=None) -> dict:
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        start, best, best_epoch, history = 0, -1.0, -1, []
        last = self.out / "last.pt"
        if resume and last.is_file():
            ck = self.load_weights(last)
            old = json.loads(ck["config"])
            new = json.loads(json.dumps(asdict(c)))
            changed = [k for k in new if k not in ("epochs", "workers") and old.get(k) != new[k]]
            if changed:
                raise PandermError(f"{last} was made with other settings ({', '.join(changed)}); rerun with them "
                                   "or start a new run")
            restore_training_state(ck, self.optimizer, self.scheduler, self.scaler)
            start, best, best_epoch = int(ck["epoch"]) + 1, float(ck["best_jaccard"]), int(ck["best_epoch"])
            history = json.loads(ck["history"])
            log.info(f"resuming after epoch {start} of {c.epochs}")
        ds_train, ds_val = self.dataset(train, True), self.dataset(val, False)
        for epoch in range(start, c.epochs):
            self.model.train()
            t0, losses = time.perf_counter(), []
            drop_last = len(ds_train) > c.batch_size and c.norm == "bn"  # a lone 1-image batch breaks BatchNorm
            batches = loader(ds_train, c.batch_size, True, c.seed * 1000 + epoch, c.workers, drop_last)
            for x, y, _ in track(batches, f"segmentation epoch {epoch + 1}/{c.epochs}", unit="batch"):
                x, y = x.to(self.device), y.to(self.device)
                with training_autocast(self.device, c.precision):
                    logits = self.model(x)
                loss = seg_loss(logits, y, c.loss)
                if not torch.isfinite(loss):
                    raise PandermError(f"the loss became {float(loss)} at epoch {epoch}; lower the learning rate", param="lr")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                losses.append(float(loss.detach()))
            self.scheduler.step()
            probs = predict_probs(self.model, ds_val, c.batch_size, self.device, c.precision)
            jac = mean_jaccard(score(probs, val, c.image_size, c.keep_largest, c.empty_rule))
            record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "val_jaccard": jac,
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 3)}
            history.append(record)
            log.info(json.dumps(record))
            if jac > best:
                best, best_epoch = jac, epoch
                save_training_checkpoint(self.out / "best.pt", {"model": self.model.trainable_state(),
                                                                "encoder_fingerprint": self.model.encoder.fingerprint,
                                                                "epoch": epoch, "config": json.dumps(asdict(c))})
            save_training_checkpoint(last, self._checkpoint(epoch, best, best_epoch, history))
            if on_epoch is not None and on_epoch(epoch):
                return {"stopped_after_epoch": epoch, "history": history}
        return {"best_val_jaccard": best, "best_epoch": best_epoch, "history": history}

    def evaluate(self, table: SegTable, n_bootstrap: int = 1000, seed: int = 42, native: bool = True) -> dict:
        ds = self.dataset(table, False)
        probs = predict_probs(self.model, ds, self.cfg.batch_size, self.device, self.cfg.precision)
        at_size = score(probs, table, self.cfg.image_size, self.cfg.keep_largest, self.cfg.empty_rule)
        out = {"n_images": len(table), "image_size": self.cfg.image_size,
               "at_model_size": summarize(at_size, n_bootstrap, seed), "per_image": at_size, "probs": probs}
        if native:
            nat = score(probs, table, self.cfg.image_size, self.cfg.keep_largest, self.cfg.empty_rule, native=True)
            out["at_mask_size"] = summarize(nat, n_bootstrap, seed)
            out["per_image_native"] = nat
        return out
