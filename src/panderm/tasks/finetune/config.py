"""Finetuning settings (defaults = the reference script's values, docs/REFERENCE.md) and the val-metric rule."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ...errors import PandermError, require_finite

log = logging.getLogger("panderm.tasks.finetune")

MONITORS = ("auto", "acc", "recall", "auroc")
_MONITOR_METRIC = {"acc": "accuracy", "recall": "balanced_accuracy", "auroc": "auroc"}


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


def _monitor_name(cfg: FinetuneConfig, n_classes: int) -> str:
    if cfg.monitor == "auto":
        return "auroc" if n_classes == 2 else "accuracy"
    return _MONITOR_METRIC[cfg.monitor]
