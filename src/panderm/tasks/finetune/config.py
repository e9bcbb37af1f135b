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
        if self.lr <= 0:
            raise PandermError(f"the learning rate must be positive, got {self.lr}", param="lr")
        if self.min_lr < 0:
            raise PandermError(f"the minimum learning rate must not be negative, got {self.min_lr}", param="min_lr")
        if self.weight_decay < 0:
            raise PandermError(f"the weight decay must not be negative, got {self.weight_decay}",
                               param="weight_decay")
        if self.monitor not in MONITORS:
            raise PandermError(f"the monitored metric must be one of {', '.join(MONITORS)}, got {self.monitor!r}",
                               param="monitor")
        if self.normalize not in ("reference", "imagenet", "model"):
            raise PandermError(f"the normalisation must be reference, imagenet or model, got {self.normalize!r}",
                               param="normalize")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise PandermError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}",
                                   param=name)
        if self.warmup_epochs < 0:
            raise PandermError(f"warmup epochs must be 0 or more, got {self.warmup_epochs}", param="warmup_epochs")
        if self.warmup_epochs > self.epochs:
            log.warning("finetune: %d warmup epochs > %d epochs: warming up over the whole run",
                        self.warmup_epochs, self.epochs)
            self.warmup_epochs = self.epochs
        if not 0 < self.layer_decay <= 1:
            raise PandermError(f"the layer decay must be in (0, 1], got {self.layer_decay}", param="layer_decay")
        if not 0 <= self.drop_path < 1:
            raise PandermError(f"the drop-path rate must be in [0, 1), got {self.drop_path}", param="drop_path")


def _monitor_name(cfg: FinetuneConfig, n_classes: int) -> str:
    if cfg.monitor == "auto":
        return "auroc" if n_classes == 2 else "accuracy"
    return _MONITOR_METRIC[cfg.monitor]
