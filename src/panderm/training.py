"""The training kit shared by finetuning, multimodal training and segmentation (docs/REFERENCE.md).

Seeding and seeded generators, the resume rules (a last.pt belongs to this run; optimiser, schedule, AMP scaler
and random-number state come back in one order), the log trim after a kill, the sharded batch sampler of
torchrun training, the reference's per-step warmup + cosine schedule and its class-balanced sample weights.
Checkpoint bytes and random-number state go through :mod:`panderm.checkpoint_io`; device / precision / autocast
rules live in :mod:`panderm.runtime`.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from .checkpoint_io import load_training_checkpoint, remove_stale_temps, rng_state, save_training_checkpoint
from .checkpoint_io import set_rng_state
from .errors import DataError, PandermError
from .report import atomic_path

__all__ = [
    "seed_everything", "seeded_generator", "rank_worker_seed", "rng_state", "set_rng_state",
    "save_training_checkpoint", "load_training_checkpoint", "remove_stale_temps", "check_same_run",
    "restore_training_state", "trim_log", "ShardedBatchSampler", "WarmupCosine", "class_balanced_weights",
    "weighted_sampler",
]


# --------------------------------------------------------------------------- #
# Random numbers
# --------------------------------------------------------------------------- #
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global streams from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU torch generator at `seed`: a loader drawing from it gives the same order and worker seeds on rerun."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def rank_worker_seed(worker_id: int, rank: int) -> None:
    """DataLoader `worker_init_fn` (bind `rank`): ranks sharing one loader seed do not augment identically."""
    seed_everything((torch.initial_seed() + 7919 * rank) % (2 ** 63))


# --------------------------------------------------------------------------- #
# Resume
# --------------------------------------------------------------------------- #
def check_same_run(meta: dict, path, n_classes: int, model_id: str, advice: str) -> None:
    """A last.pt is resumed only by a run of the same model and class count; `advice` says what to do instead."""
    if meta["n_classes"] != n_classes or meta["model_id"] != model_id:
        raise PandermError(f"{path} was written by another run (model {meta['model_id']}, "
                           f"K={meta['n_classes']}); {advice}", param="run_dir")


def restore_training_state(ck: dict, optimizer, scheduler, scaler) -> None:
    """Optimiser, schedule and AMP scaler from a last.pt, then the random-number state it saved (last, so
    nothing drawn while restoring moves the streams the next epoch draws from)."""
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    scaler.load_state_dict(ck["scaler"])
    set_rng_state(ck["rng"])


def trim_log(path, last_epoch: int) -> None:
    """Keep the JSONL lines of the epochs a checkpoint holds (a kill after logging an epoch but before its
    checkpoint leaves one line too many); rewritten atomically, untouched when nothing is dropped."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", -1) <= last_epoch]
    if len(kept) != len(lines):
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #
class ShardedBatchSampler:
    """This rank's contiguous share of every global batch drawn from `sampler` (drop_last, equal shares).

    `label` names the batch size in the error (a door passes its own spelling)."""

    def __init__(self, sampler, global_batch: int, rank: int, world: int):
        if global_batch % world:
            raise PandermError(f"batch size {global_batch} (the global batch) must be a multiple of the "
                               f"{world} processes", param="batch_size")
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


def class_balanced_weights(labels) -> np.ndarray:
    """Per-sample weight N / (K n_c) of the sample's class, K the classes present (the reference's weighted
    sampler, docs/REFERENCE.md): every class carries the same total weight N/K.

    Finetuning's rule counted K over every class, but its splits hold every class in train, so the two rules
    the tasks had agree. Equal, bit for bit, to sklearn's compute_sample_weight("balanced") (tests/test_training.py),
    which is not called here: its first call imports sklearn.preprocessing, and that import draws from Python's
    global random stream, so a run's saved random-number state (last.pt) would change."""
    labels = np.asarray(getattr(labels, "labels", labels), dtype=np.int64).ravel()
    if labels.size == 0:
        raise DataError("cannot weight an empty training set")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels.size / (len(counts) * counts))[inverse].astype(np.float64)


def weighted_sampler(labels, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """The reference's class-weighted sampler: `class_balanced_weights`, N draws per epoch with replacement."""
    weights = class_balanced_weights(labels)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                 num_samples=num_samples or len(weights), replacement=True, generator=generator)


# --------------------------------------------------------------------------- #
# Schedule
# --------------------------------------------------------------------------- #
class WarmupCosine:
    """Per-step schedule of the reference (`cosine_scheduler`): linspace(0, lr, W) then cosine to min_lr.

    timm's CosineLRScheduler warms up from `warmup_lr_init` towards lr without reaching it on the last warm-up
    step (the reference's linspace does), so ours stays."""

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
