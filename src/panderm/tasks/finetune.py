"""Full finetuning of a vision backbone + linear head (the PanDerm v1 recipe, docs/REFERENCE.md).

Recipe (defaults = the reference script's values):
AdamW (eps 1e-8, weight decay 0.05, none on 1-D params / biases / position and class
embeddings), base lr 5e-4 with per-step linear warmup from 0 (10 epochs) then cosine to
1e-6, layer-wise lr decay 0.65 (scale 0.65^(L+1-i) for layer id i: embeddings 0, block j
-> j+1, norms / head L+1), timm Mixup 0.8 / CutMix 1.0 (prob 1, switch 0.5, batch mode,
label smoothing 0.1) with SoftTargetCrossEntropy, optional class-weighted sampler
(w_c = N / (K n_c)), best checkpoint by strict improvement of a val metric, optional
5-view test-time augmentation, AMP on CUDA only.

Pooling: PanDerm v1 (family ``panderm_v1``) uses the mean of the patch tokens (CLS
excluded) after the last block, then ``fc_norm``, a LayerNorm initialised from the
pretrained final ``norm`` (the reference renames ``norm.*`` -> ``fc_norm.*``); the tower's
own ``norm`` is then unused and frozen. Every other family uses ``encode_image(x,
"features")``. Parameters that get no gradient through that path (a CLIP text tower, a
projection) are frozen and left out of the optimiser.

Relative position bias: for PanDerm v1 the wrapper adds a zero-initialised BEiT-style table per block
(``rel_pos_bias``, on by default as the reference's ``--rel_pos_bias``; released weights carry none, so the
start equals the pretrained model). Other families have no such option.

Drop path: the CAE tower's blocks (cae_vit.py) start with rate 0; for PanDerm v1 the
wrapper runs the tower's blocks itself (cae_vit's helpers) with per-sample drop path on both residual
branches, rates linearly 0 -> ``drop_path`` over the blocks as the reference; in eval
mode (or with rate 0) this is exactly ``tower.run_blocks``. timm ViTs get their
``drop_path1/2`` modules replaced the same way; other backbones run without drop path
(recorded in results.json as ``drop_path_applied: false``).

Distributed (torchrun, gloo on CPU / NCCL on GPU): ``batch_size`` is the GLOBAL batch. Every rank draws the same
sample order from the same seeded generator and takes its contiguous share of each global batch; DDP averages the
gradients, so a step is the single-process step on the same images (with mixup, drop path or augmentation the
random draws come from each rank's own stream, seeded by (seed, epoch, rank): the same distribution, not the
same numbers). Val / test batches (1.5x the per-rank training batch) are dealt round-robin and gathered back by
index (no padded duplicates); rank 0 alone writes checkpoints and logs, so ``--out`` must be on a file system
every node sees.

Resume: ``last.pt`` holds the model, optimiser, schedule step, AMP scaler, epoch, best
metric and the torch / numpy / python (and CUDA) RNG states; every train loader draws its
order and worker seeds from a generator seeded by (seed, epoch). On CPU a resumed run
ends with the same weights, bit for bit, as an uninterrupted one.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset, WeightedRandomSampler

from ..checkpoint_io import load_training_checkpoint, remove_stale_temps, rng_state, set_rng_state
from ..checkpoint_io import save_training_checkpoint as save_checkpoint
from ..errors import DataError, ModelError, PandermError, require_finite
from ..progress import track
from ..runtime import training_autocast
from ..models.base import IMAGENET_MEAN, IMAGENET_STD, Encoder
from ..models.cae_vit import drop_path as _drop_path
from ..models.cae_vit import drop_path_rates as _drop_path_rates

log = logging.getLogger(__name__)

_LAST_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_metric", "best_epoch", "rng", "meta")
BEST_STAGED = "best.pt.next"  # a new best waits here until last.pt records it
REFERENCE_STD = (0.228, 0.224, 0.225)  # the reference's std typo (§1.4)
MONITORS = ("auto", "acc", "recall", "auroc")
_MONITOR_METRIC = {"acc": "accuracy", "recall": "balanced_accuracy", "auroc": "auroc"}
_NO_WD_NAMES = ("pos_embed", "cls_token", "positional_embedding", "class_embedding", "position_embedding")
_BLOCK_RE = re.compile(r"(?:^|\.)(?:blocks|resblocks|layers|layer)\.(\d+)\.")


@dataclass
class FinetuneConfig:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    layer_decay: float = 0.65
    weight_decay: float = 0.05
    drop_path: float = 0.2
    rel_pos_bias: bool = True  # PanDerm v1 / CAE towers: per-block relative position bias, as the reference
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    weighted_sampler: bool = False
    monitor: str = "auto"  # auto: val AUROC when K == 2, else val accuracy (the reference)
    tta: bool = False
    tta_views: int = 5
    seed: int = 0
    image_size: int | None = None  # None: the encoder's preprocess size
    normalize: str = "reference"  # reference (std 0.228) | imagenet (0.229) | model (the encoder's own)
    augment: bool = True  # False: train on the eval transform (smoke tests)
    head_init_scale: float = 0.001
    num_workers: int = 0
    precision: str = "amp"  # amp | amp_bf16 | fp32; autocast on CUDA only
    max_steps: int | None = None  # cap on optimiser steps per epoch (smoke tests)
    stop_after_epoch: int | None = None  # end this invocation after that epoch's checkpoint (simulated kill)
    bootstrap: int = 1000
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        require_finite(self)
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0:
            raise PandermError(f"--lr must be positive and --min-lr, --weight-decay not negative "
                               f"(got {self.lr}, {self.min_lr}, {self.weight_decay})")
        if self.monitor not in MONITORS:
            raise PandermError(f"--monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        if self.normalize not in ("reference", "imagenet", "model"):
            raise PandermError(f"--normalize must be reference, imagenet or model, got {self.normalize!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise PandermError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup_epochs < 0:
            raise PandermError("--warmup-epochs must be 0 or more")
        if self.warmup_epochs > self.epochs:
            log.warning("finetune: --warmup-epochs %d > --epochs %d: warming up over the whole run",
                        self.warmup_epochs, self.epochs)
            self.warmup_epochs = self.epochs
        if not 0 < self.layer_decay <= 1:
            raise PandermError("--layer-decay must be in (0, 1]")
        if not 0 <= self.drop_path < 1:
            raise PandermError("--drop-path must be in [0, 1)")


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def relative_position_index(grid_h: int, grid_w: int) -> torch.Tensor:
    """[n+1, n+1] index into a BEiT-style relative position bias table of (2h-1)(2w-1)+3 rows (n = h·w).

    Patch pair (i, j) → the row of their offset (Δy, Δx) = pos_i − pos_j, numbered (Δy+h−1)(2w−1) + (Δx+w−1);
    the three extra rows are CLS→patch (first row of the matrix), patch→CLS (first column) and CLS→CLS.
    """
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + grid_h - 1
    dx = xs[:, None] - xs[None, :] + grid_w - 1
    n_offsets = (2 * grid_h - 1) * (2 * grid_w - 1)
    index = torch.empty(grid_h * grid_w + 1, grid_h * grid_w + 1, dtype=torch.long)
    index[1:, 1:] = dy * (2 * grid_w - 1) + dx
    index[0, :] = n_offsets
    index[:, 0] = n_offsets + 1
    index[0, 0] = n_offsets + 2
    return index


class FinetuneModel(nn.Module):
    """Backbone (an `Encoder`) + pooling + linear head."""

    def __init__(self, encoder: Encoder, n_classes: int, drop_path: float = 0.0, head_init_scale: float = 0.001,
                 image_size: int | None = None, rel_pos_bias: bool = True):
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        self.mean_pool = encoder.family == "panderm_v1"
        self.drop_path_applied = False
        self.rel_pos_bias = False
        self.drop_path_rates: list[float] = []
        if self.mean_pool:
            tower = encoder.tower
            # Reference: norm.* -> fc_norm.*; the tower's own norm is then unused.
            self.fc_norm = copy.deepcopy(tower.norm)
            tower.norm.requires_grad_(False)
            dim = tower.cfg.width
            self.drop_path_rates = _drop_path_rates(len(tower.blocks), drop_path)
            self.drop_path_applied = drop_path > 0
            if rel_pos_bias:
                self._add_rel_pos_bias(tower, (image_size or tower.cfg.image_size) // tower.cfg.patch_size)
        else:
            self.fc_norm = nn.Identity()
            dim = _feature_dim(encoder, image_size)
            self.drop_path_applied = _timm_drop_path(encoder, drop_path)
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def _add_rel_pos_bias(self, tower, grid: int) -> None:
        """A zero-initialised relative position bias table per block (the reference finetunes with one: BEiT's
        ``use_rel_pos_bias``). Zero tables leave the pretrained model's outputs unchanged at the start; each
        table lives in its block (``blocks.N.attn.relative_position_bias_table``), so it gets that block's
        layer-decay scale."""
        self.rel_pos_bias = True
        self.rel_pos_grid = grid
        self.register_buffer("rel_pos_index", relative_position_index(grid, grid), persistent=False)
        rows = (2 * grid - 1) ** 2 + 3
        for block in tower.blocks:
            block.attn.relative_position_bias_table = nn.Parameter(torch.zeros(rows, block.attn.heads))

    def _score_bias(self, block, n_tokens: int) -> torch.Tensor | None:
        if not self.rel_pos_bias:
            return None
        if n_tokens != self.rel_pos_index.shape[0]:
            raise ModelError(f"the relative position bias was built for a {self.rel_pos_grid}x{self.rel_pos_grid} "
                             f"patch grid, got {n_tokens - 1} patches; finetune and evaluate at one image size")
        table = block.attn.relative_position_bias_table
        return table[self.rel_pos_index.view(-1)].view(n_tokens, n_tokens, -1).permute(2, 0, 1)

    def _cae_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """`tower.run_blocks` with per-sample drop path on each residual branch (and the relative position bias)."""
        tower = self.encoder.tower
        p = tower.cfg.patch_size
        gh, gw = x.shape[-2] // p, x.shape[-1] // p
        x = tower.patch_embed(x)
        x = torch.cat([tower.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + tower._pos_embed_for(gh, gw).to(x.dtype)
        for block, rate in zip(tower.blocks, self.drop_path_rates):
            bias = self._score_bias(block, x.shape[1])
            x = x + _drop_path(block.gamma_1 * block.attn(block.norm1(x), bias), rate, self.training)
            x = x + _drop_path(block.gamma_2 * block.mlp(block.norm2(x)), rate, self.training)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean_pool:
            return self.fc_norm(self._cae_tokens(x)[:, 1:].mean(dim=1))
        return self.encoder.encode_image(x, "features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _feature_dim(encoder: Encoder, image_size: int | None) -> int:
    size = image_size or encoder.preprocess_spec.size
    with torch.no_grad():
        out = encoder.encode_image(torch.zeros(1, 3, size, size, device=encoder.device), "features")
    return int(out.shape[-1])


def _timm_drop_path(encoder: Encoder, rate: float) -> bool:
    """Give a timm ViT stochastic depth after construction (load_timm builds it without)."""
    if rate <= 0:
        return False
    model = getattr(encoder, "model", None)
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or not len(blocks):
        return False
    if not all(hasattr(b, "drop_path1") and hasattr(b, "drop_path2") for b in blocks):
        return False
    from timm.layers import DropPath

    for block, r in zip(blocks, _drop_path_rates(len(blocks), rate)):
        block.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        block.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
    return True


def freeze_unused(model: FinetuneModel, image_size: int) -> list[str]:
    """Freeze parameters that get no gradient from the classification path; return their names."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        x = torch.zeros(2, 3, image_size, image_size, device=next(model.parameters()).device)
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()
    frozen = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
        p.grad = None
    model.train(was_training)
    return frozen


# --------------------------------------------------------------------------- #
# Layer-wise lr decay + AdamW groups
# --------------------------------------------------------------------------- #
def layer_ids(model: FinetuneModel) -> tuple[dict[str, int], int]:
    """Layer id per trainable parameter and the number of blocks L.

    Block j (a `blocks.N.` / `resblocks.N.` / `layers.N.` / `layer.N.` path) -> N + 1;
    backbone parameters registered before the first block (patch/pos/cls embeddings,
    stems) -> 0; everything after the blocks (final norms, fc_norm, head) -> L + 1. This
    is the reference assignment for the CAE tower. A backbone with no recognisable
    blocks (e.g. a ResNet) gets L = 0: every parameter has scale 1, no decay.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    block_of = {}
    for n in names:
        if n.startswith("encoder."):
            m = _BLOCK_RE.search(n)
            if m:
                block_of[n] = int(m.group(1))
    depth = 1 + max(block_of.values()) if block_of else 0
    ids, seen_block = {}, False
    for n in names:
        if n in block_of:
            ids[n] = block_of[n] + 1
            seen_block = True
        elif n.startswith("encoder.") and not seen_block and depth:
            ids[n] = 0
        else:
            ids[n] = depth + 1
    return ids, depth


def param_groups(model: FinetuneModel, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups keyed by (layer id, decay); each carries `lr_scale` = layer_decay^(L+1-id)."""
    ids, depth = layer_ids(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in _NO_WD_NAMES
        lid = ids[name]
        key = (lid, not no_wd)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


class WarmupCosine:
    """Per-step schedule of the reference (`cosine_scheduler`): linspace(0, lr, W) then cosine to min_lr."""

    def __init__(self, optimizer, base_lr: float, min_lr: float, total_steps: int, warmup_steps: int):
        self.optimizer, self.base_lr, self.min_lr = optimizer, base_lr, min_lr
        self.total_steps, self.warmup_steps = max(1, total_steps), min(warmup_steps, max(1, total_steps))
        self.step_num = 0

    def lr_at(self, i: int) -> float:
        w = self.warmup_steps
        if i < w:
            return self.base_lr * (i / (w - 1) if w > 1 else 0.0)
        n = self.total_steps - w
        j = min(i - w, max(n - 1, 0))
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * j / max(n, 1)))

    def apply(self) -> float:
        lr = self.lr_at(self.step_num)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.step_num += 1

    def trained_by(self, steps: int) -> bool:
        """Whether any of the first `steps` optimiser steps had a learning rate above 0 (warm-up starts at 0)."""
        return any(self.lr_at(i) > 0 for i in range(min(steps, self.warmup_steps + 1)))

    def state_dict(self) -> dict:
        return {"step_num": self.step_num, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step_num"])


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def norm_stats(cfg: FinetuneConfig, encoder: Encoder) -> tuple[tuple, tuple]:
    if cfg.normalize == "model":
        return tuple(encoder.preprocess_spec.mean), tuple(encoder.preprocess_spec.std)
    return IMAGENET_MEAN, (REFERENCE_STD if cfg.normalize == "reference" else IMAGENET_STD)


def default_image_size(encoder: Encoder) -> int:
    """The tower's native input size for CAE towers (a reduced tower may take 32 px), else the preprocess crop."""
    tower = getattr(encoder, "tower", None)
    return int(getattr(tower, "image_size", None) or encoder.preprocess_spec.size)


def _scaled(size: int, ref: int) -> int:
    # The reference sizes are for a 224 crop: Resize 256 (eval / train), 246 (TTA).
    return int(round(size * ref / 224))


def build_transforms(size: int, mean, std, augment: bool = True):
    """(train, eval) transforms of §1.4, scaled to `size` (224 → Resize 256)."""
    from torchvision import transforms as T

    resize = T.Resize(_scaled(size, 256), interpolation=T.InterpolationMode.BILINEAR)
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    eval_t = T.Compose([resize, T.CenterCrop(size), *norm])
    if not augment:
        return eval_t, eval_t
    train_t = T.Compose([resize, T.RandomResizedCrop(size, scale=(0.75, 1.0)), T.RandomHorizontalFlip(),
                         T.RandomVerticalFlip(), T.RandomRotation(45), T.ColorJitter(hue=0.2), *norm])
    return train_t, eval_t


def tta_transforms(size: int):
    """(loader transform, per-view transform) of the reference TTA.

    The reference loader gives ToTensor at native size; Resize(246) is deterministic, so it
    runs in the loader here (bilinear with antialias), letting images of any size batch.
    """
    from torchvision import transforms as T

    loader = T.Compose([T.Resize(_scaled(size, 246), interpolation=T.InterpolationMode.BILINEAR),
                        T.CenterCrop(_scaled(size, 246)), T.ToTensor()])
    view = T.Compose([
        T.CenterCrop(size), T.RandomHorizontalFlip(0.5), T.RandomVerticalFlip(0.5),
        T.RandomApply([T.RandomRotation((0, 270))], p=0.3),
        T.RandomApply([T.ColorJitter(hue=0.25, saturation=0.25)], p=0.3),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),  # the reference's TTA uses std 0.229
    ])
    return loader, view


class ImageDataset(Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels, dtype=np.int64), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from ..data.images import open_image

        return self.transform(open_image(self.paths[i])), int(self.labels[i])


class ShardedBatchSampler:
    """This rank's contiguous share of every global batch drawn from `sampler` (drop_last, equal shares)."""

    def __init__(self, sampler, global_batch: int, rank: int, world: int):
        if global_batch % world:
            raise PandermError(f"--batch-size {global_batch} (the global batch) must be a multiple of the "
                               f"{world} processes")
        self.sampler, self.global_batch, self.rank, self.world = sampler, global_batch, rank, world
        self.local = global_batch // world

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.global_batch:
                yield batch[self.rank * self.local:(self.rank + 1) * self.local]
                batch = []

    def __len__(self) -> int:
        return len(self.sampler) // self.global_batch


def _rank_worker_seed(worker_id: int, rank: int) -> None:
    seed_everything((torch.initial_seed() + 7919 * rank) % (2 ** 63))


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights N / (K n_c) of the sample's class (the reference `--weights`)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = len(labels) / (n_classes * np.maximum(counts, 1))
    return w[labels]


def check_splits(splits) -> int:
    """K, after checking every class of val/test occurs in train."""
    k = splits.n_classes
    train = set(np.unique(splits.tables["train"].labels).tolist())
    for name, table in splits.tables.items():
        missing = sorted(set(np.unique(table.labels).tolist()) - train)
        if missing:
            raise DataError(f"{splits.csv}: class(es) {missing} occur in {name} but not in train; "
                            "finetuning cannot learn them")
    if len(train) < 2:
        raise DataError(f"{splits.csv}: train holds a single class")
    names = splits.tables["train"].classnames
    absent = [str(names[c]) for c in range(k) if c not in train] if names else []
    if absent:
        raise DataError(f"{splits.csv}: class(es) {absent} of the {k} class names have no train rows; "
                        "finetuning cannot learn them (list only the classes in the CSV)")
    return k


# --------------------------------------------------------------------------- #
# RNG / checkpoints
# --------------------------------------------------------------------------- #
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _load_weights(model: nn.Module, ck: dict, path, model_id: str) -> None:
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        saved = ck.get("meta", {}).get("config", {}).get("rel_pos_bias")
        mismatch = any("relative_position_bias_table" in line for line in str(exc).splitlines())
        if mismatch and saved is not None:
            hint = ("it was trained with the relative position bias: drop --disable-rel-pos-bias" if saved
                    else "it was trained without the relative position bias: pass --disable-rel-pos-bias")
            raise ModelError(f"{path}: {hint}") from exc
        raise ModelError(f"{path}: does not fit --model {model_id}: {str(exc).splitlines()[0]}") from exc


def load_checkpoint(path, required=("model",)) -> dict:
    return load_training_checkpoint(path, required, "finetune checkpoint")


# --------------------------------------------------------------------------- #
# Train / evaluate
# --------------------------------------------------------------------------- #
_autocast = training_autocast  # the shared rule (panderm.runtime)


@torch.no_grad()
def predict(model: FinetuneModel, loader, device, precision="fp32", tta_view=None, views: int = 5,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, labels); with `tta_view` the logits of `views` random views are averaged."""
    import contextlib

    model.eval()
    probs, labels = [], []
    rng = contextlib.nullcontext()
    if tta_view is not None:  # TTA views are reproducible and leave the caller's RNG streams alone
        rng = torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if device.type == "cuda" else [])
    with rng:
        if tta_view is not None:
            torch.manual_seed(seed)
        for x, y in loader:
            x = x.to(device)
            with _autocast(device, precision):
                if tta_view is None:
                    logits = model(x).float()
                else:
                    logits = torch.stack([
                        model(torch.stack([tta_view(img) for img in x])).float() for _ in range(views)]).mean(0)
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
            labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels)


_RESUME_FREE = ("stop_after_epoch", "tta", "tta_views", "bootstrap", "num_workers", "extra")


def _warn_config_change(old: dict, new: dict) -> None:
    changed = sorted(k for k in new if k not in _RESUME_FREE and k in old and old[k] != new[k])
    if changed:
        log.warning("finetune: resuming with changed settings %s; the run is no longer the one it continues",
                    ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in changed))


def _monitor_name(cfg: FinetuneConfig, n_classes: int) -> str:
    if cfg.monitor == "auto":
        return "auroc" if n_classes == 2 else "accuracy"
    return _MONITOR_METRIC[cfg.monitor]


def _metrics(labels, probs) -> dict:
    from ..metrics import classification_metrics

    return classification_metrics(labels, probs)


class Finetuner:
    """One finetuning run in `out_dir` (fresh, or resumed from `out_dir/last.pt`)."""

    def __init__(self, encoder: Encoder, splits, cfg: FinetuneConfig, out_dir, device="cpu",
                 on_epoch_end: Callable[[int, dict], None] | None = None):
        cfg.check()
        self.cfg, self.splits, self.out = cfg, splits, Path(out_dir)
        self.device = torch.device(device)
        self.n_classes = check_splits(splits)
        self.encoder = encoder
        self.size = cfg.image_size or default_image_size(encoder)
        self.on_epoch_end = on_epoch_end
        from ..distributed import rank_world

        self.rank, self.world = rank_world()
        seed_everything(cfg.seed)
        self.model = FinetuneModel(encoder, self.n_classes, cfg.drop_path, cfg.head_init_scale, self.size,
                                   rel_pos_bias=cfg.rel_pos_bias)
        self.model.to(self.device)
        self.frozen = freeze_unused(self.model, self.size)
        if self.frozen:
            log.info("finetune: %d parameter tensors get no gradient from the classifier and stay frozen",
                     len(self.frozen))
        mean, std = norm_stats(cfg, encoder)
        self.train_t, self.eval_t = build_transforms(self.size, mean, std, cfg.augment)
        self.monitor = _monitor_name(cfg, self.n_classes)
        self.mixup_fn = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                                  switch_prob=cfg.mixup_switch_prob, mode="batch", label_smoothing=cfg.smoothing,
                                  num_classes=self.n_classes)

    # -- data ----------------------------------------------------------------------------
    def _train_loader(self, epoch: int) -> DataLoader:
        t = self.splits.tables["train"]
        ds = ImageDataset(t.paths, t.labels, self.train_t)
        bs = min(self.cfg.batch_size, len(ds))
        step = 2 * self.world if self.mixup_fn is not None else self.world
        if bs % step and epoch == 0:
            log.warning("finetune: batch %d -> %d (a multiple of %d: %s)", bs, bs - bs % step, step,
                        "an even share per process for mixup" if self.mixup_fn is not None else "equal shares")
        bs -= bs % step  # timm's batch-mode mixup needs an even batch on every rank
        if bs < 1:
            raise DataError("the train split is too small for a batch")
        g = _generator(self.cfg.seed * 100003 + epoch)
        kw = dict(num_workers=self.cfg.num_workers, generator=g, pin_memory=self.device.type == "cuda",
                  persistent_workers=False)
        if self.cfg.weighted_sampler:
            sampler = WeightedRandomSampler(torch.as_tensor(class_weights(t.labels, self.n_classes)),
                                            num_samples=len(ds), replacement=True, generator=g)
        else:
            sampler = RandomSampler(ds, generator=g)
        if self.world > 1:
            # The loader draws its worker seed from `g` before the sampler runs, exactly as in one process;
            # workers then offset it by the rank so ranks do not augment their shares identically.
            return DataLoader(ds, batch_sampler=ShardedBatchSampler(sampler, bs, self.rank, self.world),
                              worker_init_fn=functools.partial(_rank_worker_seed, rank=self.rank), **kw)
        return DataLoader(ds, sampler=sampler, batch_size=bs, drop_last=True, **kw)

    def eval_loader(self, split: str, tta: bool = False, indices=None) -> DataLoader:
        t = self.splits.tables[split]
        transform = tta_transforms(self.size)[0] if tta else self.eval_t
        bs = self._eval_batch()
        ds = ImageDataset(t.paths, t.labels, transform)
        return DataLoader(ds if indices is None else Subset(ds, indices), batch_size=bs, shuffle=False,
                          num_workers=self.cfg.num_workers, generator=_generator(0))

    def _eval_batch(self) -> int:
        # 1.5x the training batch per process, as the reference (whose batch is per GPU).
        return max(1, int(1.5 * self.cfg.batch_size / self.world))

    def predict_split(self, split: str, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities and labels for a whole split; under torchrun each rank predicts its round-robin
        share of the batches and every rank gets all rows back, in order."""
        view = tta_transforms(self.size)[1] if tta else None
        kw = dict(tta_view=view, views=self.cfg.tta_views, seed=self.cfg.seed)
        if self.world == 1:
            return predict(self.model, self.eval_loader(split, tta), self.device, self.cfg.precision, **kw)
        from ..distributed import gather_rows, shard_indices

        labels = np.asarray(self.splits.tables[split].labels)
        mine = shard_indices(len(labels), self._eval_batch(), self.rank, self.world)
        probs = np.zeros((0, self.n_classes), dtype=np.float32)
        if mine:
            probs, _ = predict(self.model, self.eval_loader(split, tta, mine), self.device, self.cfg.precision, **kw)
        return gather_rows(np.asarray(mine, dtype=np.int64), probs.astype(np.float32), len(labels)), labels

    # -- training ------------------------------------------------------------------------
    def _build_optim(self, steps_per_epoch: int):
        groups = param_groups(self.model, self.cfg.weight_decay, self.cfg.layer_decay)
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, eps=1e-8, betas=(0.9, 0.999))
        sched = WarmupCosine(opt, self.cfg.lr, self.cfg.min_lr, self.cfg.epochs * steps_per_epoch,
                             self.cfg.warmup_epochs * steps_per_epoch)
        use_scaler = self.device.type == "cuda" and self.cfg.precision in ("amp", "fp16")
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        return opt, sched, scaler

    def _steps_per_epoch(self) -> int:
        n = len(self._train_loader(0))
        return min(n, self.cfg.max_steps) if self.cfg.max_steps else n

    def _loss(self, logits, y_soft, y):
        if self.mixup_fn is not None:
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()(logits, y_soft)
        return F.cross_entropy(logits, y, label_smoothing=self.cfg.smoothing)

    def _meta(self) -> dict:
        return {"n_classes": self.n_classes, "model_id": self.encoder.model_id, "family": self.encoder.family,
                "image_size": self.size, "config": asdict(self.cfg),
                "classnames": self.splits.tables["train"].classnames}

    def _settle_best(self, best_epoch) -> None:
        """A best.pt staged before a kill: put it in place if last.pt names its epoch as the best, else drop it."""
        staged = self.out / BEST_STAGED
        if not staged.is_file():
            return
        if load_checkpoint(staged).get("epoch") == best_epoch:
            os.replace(staged, self.out / "best.pt")
        else:
            staged.unlink()

    def _trim_log(self, last_epoch: int) -> None:
        """Keep the log lines of the epochs last.pt holds (a kill after logging an epoch but before its
        checkpoint leaves one line too many)."""
        path = self.out / "log.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", -1) <= last_epoch]
        if len(kept) != len(lines):
            from ..report import atomic_path

            with atomic_path(path) as tmp:
                Path(tmp).write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def fit(self, resume: bool = False) -> dict:
        """Train (or continue), then test with the best checkpoint; returns the results dict."""
        cfg, model, dev = self.cfg, self.model, self.device
        steps = self._steps_per_epoch()
        opt, sched, scaler = self._build_optim(steps)
        start, best, best_epoch = 0, -math.inf, None
        last = self.out / "last.pt"
        if self.rank == 0:  # a run killed while writing left these behind
            remove_stale_temps(self.out, ("last.pt", "best.pt", BEST_STAGED, "log.jsonl"))
        if resume and last.is_file():
            ck = load_checkpoint(last, _LAST_KEYS)
            if ck["meta"]["n_classes"] != self.n_classes or ck["meta"]["model_id"] != self.encoder.model_id:
                raise PandermError(f"{last} was written by another run (model {ck['meta']['model_id']}, "
                                   f"K={ck['meta']['n_classes']}); use another --out or --overwrite")
            _warn_config_change(ck["meta"].get("config", {}), asdict(cfg))
            _load_weights(model, ck, last, self.encoder.model_id)
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
            start, best, best_epoch = ck["epoch"] + 1, ck["best_metric"], ck["best_epoch"]
            set_rng_state(ck["rng"])
            if self.rank == 0:
                self._trim_log(ck["epoch"])
                self._settle_best(ck["best_epoch"])
            log.info("finetune: resumed from %s after epoch %d", last, ck["epoch"])
        elif resume:
            log.info("finetune: no %s yet; starting a fresh run", last)
        history = []
        train_model = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        has_val = "val" in self.splits.tables
        if not has_val:
            log.warning("finetune: no val split; the last epoch is kept as 'best'")
        for epoch in range(start, cfg.epochs):
            if self.world > 1:
                # Each rank draws its own augmentation / mixup / drop-path numbers, from a stream fixed by (seed,
                # epoch, rank), so a resumed epoch draws what it drew before; the sample order comes from the
                # loader's generator, shared by all ranks.
                seed_everything(cfg.seed * 1_000_003 + epoch * 10_007 + self.rank)
            model.train()
            t0, losses = time.time(), []
            batches = track(self._train_loader(epoch), f"finetune epoch {epoch + 1}/{cfg.epochs}", total=steps,
                            unit="batch", enabled=self.rank == 0)
            for i, (x, y) in enumerate(batches):
                if i >= steps:
                    break
                sched.apply()
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                y_soft = None
                if self.mixup_fn is not None:
                    x, y_soft = self.mixup_fn(x, y)
                with _autocast(dev, cfg.precision):
                    logits = train_model(x)
                loss = self._loss(logits.float(), y_soft, y)
                shown = loss.detach().clone()
                if self.world > 1:  # equal shares: the mean of the ranks' means is the global batch's loss
                    torch.distributed.all_reduce(shown)
                    shown /= self.world
                if not torch.isfinite(shown):
                    raise PandermError(f"finetune: loss is {loss.item()} at epoch {epoch} step {i}; lower --lr")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                losses.append(float(shown.item()))
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                      "step_losses": losses, "lr": sched.lr_at(max(sched.step_num - 1, 0)), "steps": len(losses)}
            improved = False
            # Warm-up starts at lr 0: an epoch whose steps all had lr 0 (a short run, 1 step per epoch) leaves the
            # head untrained. Such an epoch is only a placeholder best (so best.pt exists); the first trained epoch
            # replaces it whatever its metric, and later ones need a strict improvement (the reference's rule).
            trained = sched.trained_by((epoch + 1) * steps)
            record["trained"] = trained
            placeholder = best_epoch is None or not sched.trained_by((best_epoch + 1) * steps)
            if has_val:
                probs, labels = self.predict_split("val")
                val = _metrics(labels, probs)
                record["val"] = val
                value = val[self.monitor]
                value = -math.inf if value is None or math.isnan(value) else value
                improved = (placeholder or value > best) if trained else best_epoch is None
                if improved:
                    best, best_epoch = value, epoch
            else:
                improved, best_epoch = True, epoch
            record.update(monitor=self.monitor, best_metric=best, best_epoch=best_epoch,
                          seconds=round(time.time() - t0, 3))
            if self.rank == 0:
                from ..report import append_jsonl

                # Log, new best (staged), last, then the staged best takes its place: a kill anywhere leaves
                # best.pt and last.pt of the same history. --resume reruns an epoch last.pt does not hold,
                # _trim_log drops its stale log line and _settle_best finishes or discards a staged best.
                append_jsonl(self.out / "log.jsonl", record)
                if improved:
                    save_checkpoint(self.out / BEST_STAGED, {"model": model.state_dict(), "epoch": epoch,
                                                             "best_metric": best, "meta": self._meta()})
                save_checkpoint(last, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                       "epoch": epoch, "best_metric": best, "best_epoch": best_epoch,
                                       "rng": rng_state(), "meta": self._meta()})
                if improved:
                    os.replace(self.out / BEST_STAGED, self.out / "best.pt")
            from ..distributed import barrier

            barrier()  # every rank sees this epoch's checkpoints before going on
            history.append(record)
            log.info("epoch %d: loss %.4f lr %.2e%s", epoch, record["train_loss"] or float("nan"), record["lr"],
                     f" val {self.monitor} {record['val'][self.monitor]:.4f}" if has_val else "")
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, record)
            if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch and epoch < cfg.epochs - 1:
                return {"stopped_after_epoch": epoch, "history": history}
        if best_epoch is not None and not sched.trained_by((best_epoch + 1) * steps):
            log.warning("finetune: no epoch trained (the learning rate was 0 throughout: warm-up starts at 0); "
                        "best.pt is the untrained head of epoch %d; use more epochs or steps, or --warmup-epochs 0",
                        best_epoch)
        return {"history": history, "best_epoch": best_epoch, "best_metric": best}

    # -- test ----------------------------------------------------------------------------
    def test(self, checkpoint=None, tta: bool | None = None) -> dict:
        """Test-split metrics with `checkpoint` (default out/best.pt) loaded."""
        ck = load_checkpoint(checkpoint or self.out / "best.pt")
        meta = ck.get("meta", {})
        if meta.get("n_classes") != self.n_classes:
            raise PandermError(f"{checkpoint}: the checkpoint has {meta.get('n_classes')} classes, "
                               f"the CSV {self.n_classes}")
        if meta.get("model_id") != self.encoder.model_id:
            log.warning("finetune: checkpoint was trained from %s, --model is %s", meta.get("model_id"),
                        self.encoder.model_id)
        _load_weights(self.model, ck, checkpoint or self.out / "best.pt", self.encoder.model_id)
        tta = self.cfg.tta if tta is None else tta
        probs, labels = self.predict_split("test", tta)
        return {"epoch": ck.get("epoch"), "tta": tta, "probs": probs, "labels": labels,
                "metrics": _metrics(labels, probs)}


# --------------------------------------------------------------------------- #
# Reports
# --------------------------------------------------------------------------- #
def predictions_frame(test_table, labels, probs):
    """Per-sample predictions in the panderm schema (docs/OUTPUTS.md)."""
    from ..predictions import predictions_frame as frame

    return frame(test_table.frame[test_table.image_col].to_numpy(), labels, probs, test_table.classnames)


def write_report(ft: Finetuner, test: dict, out_dir, provenance: dict, fit_result: dict | None = None,
                 name: str = "test", analysis=None, val: tuple | None = None) -> dict:
    """results.json (results_<name>.json), predictions/<name>.csv, the confusion matrix and the analyses
    (calibration; subgroups with `analysis.group_cols`; temperature scaling with `val` = (labels, probs))."""
    from ..analysis.attach import analyse
    from ..metrics import bootstrap_ci
    from ..report import confusion_matrix_figure, save_figure, write_csv, write_json

    out_dir = Path(out_dir)
    table = ft.splits.tables["test"]
    write_csv(out_dir / "predictions" / f"{name}.csv", predictions_frame(table, test["labels"], test["probs"]))
    names = list(table.classnames) if table.classnames else [str(k) for k in range(ft.n_classes)]
    save_figure(out_dir / f"confusion_matrix_{name}.png",
                confusion_matrix_figure(test["labels"], test["probs"].argmax(1), names, title=name))
    ci = None
    if ft.cfg.bootstrap:
        ci = bootstrap_ci(test["labels"], test["probs"], n_resamples=ft.cfg.bootstrap, seed=42)
    summary = {
        "task": "finetune", "n_classes": ft.n_classes,
        "classnames": list(table.classnames) if table.classnames else None, "n_test": int(len(test["labels"])),
        "checkpoint_epoch": test["epoch"], "tta": test["tta"], "monitor": ft.monitor,
        "metrics": test["metrics"], "ci": ci,
        "pooling": "mean patch tokens + fc_norm (init from final norm)" if ft.model.mean_pool else "encoder features",
        "drop_path_applied": ft.model.drop_path_applied, "rel_pos_bias": ft.model.rel_pos_bias,
        "frozen_parameters": len(ft.frozen),
        "image_size": ft.size, "config": asdict(ft.cfg), "provenance": provenance,
    }
    if fit_result is not None:
        summary["best_epoch"] = fit_result.get("best_epoch")
        summary["best_val_metric"] = fit_result.get("best_metric")
    if ft.encoder.random_init:
        summary["warning"] = "RANDOM WEIGHTS: the backbone started from an untrained model"
    analyse(summary, out_dir, test["labels"], test["probs"], table.frame, analysis, classnames=names, val=val,
            title=f"finetune {name}", stem="" if name == "test" else f"{name}_")
    write_json(out_dir / ("results.json" if name == "test" else f"results_{name}.json"), summary)
    return summary


def read_log(out_dir) -> list[dict]:
    path = Path(out_dir) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
