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
(``rel_pos_bias``, on by default as the reference's rel_pos_bias flag; released weights carry none, so the
start equals the pretrained model). Other families have no such option.

Drop path: the CAE tower's blocks (cae_vit.py) start with rate 0; for PanDerm v1 the
wrapper calls ``tower.forward_tokens`` with per-block rates (per-sample drop path on both residual
branches, rates linearly 0 -> ``drop_path`` over the blocks as the reference) and the relative
position biases; in eval mode (or with rate 0 and no bias) this is exactly ``tower.run_blocks``. timm ViTs get their
``drop_path1/2`` modules replaced the same way; other backbones run without drop path
(recorded in results.json as ``drop_path_applied: false``).

Distributed (torchrun, gloo on CPU / NCCL on GPU): ``batch_size`` is the GLOBAL batch. Every rank draws the same
sample order from the same seeded generator and takes its contiguous share of each global batch; DDP averages the
gradients, so a step is the single-process step on the same images (with mixup, drop path or augmentation the
random draws come from each rank's own stream, seeded by (seed, epoch, rank): the same distribution, not the
same numbers). Val / test batches (1.5x the per-rank training batch) are dealt round-robin and gathered back by
index (no padded duplicates); rank 0 alone writes checkpoints and logs, so the run folder must be on a file system
every node sees.

Resume: ``last.pt`` holds the model, optimiser, schedule step, AMP scaler, epoch, best
metric and the torch / numpy / python (and CUDA) RNG states; every train loader draws its
order and worker seeds from a generator seeded by (seed, epoch). On CPU a resumed run
ends with the same weights, bit for bit, as an uninterrupted one.

Layout: ``config`` (settings), ``model`` (backbone + head, layer-decay groups), ``data`` (transforms, dataset),
``trainer`` (`Finetuner`), ``report`` (results files); the shared training kit is :mod:`panderm.training`.
"""
from __future__ import annotations

from ...errors import PandermError
from ...models.cae_vit import drop_path as _drop_path
from ...models.cae_vit import drop_path_rates as _drop_path_rates
from ...runtime import training_autocast as _autocast
from ...training import ShardedBatchSampler, WarmupCosine, seed_everything
from ...training import rank_worker_seed as _rank_worker_seed
from ...training import save_training_checkpoint as save_checkpoint
from ...training import seeded_generator as _generator
from . import trainer
from .config import MONITORS, FinetuneConfig, _monitor_name
from .data import (REFERENCE_STD, ImageDataset, build_transforms, check_splits, default_image_size, norm_stats,
                   tta_transforms)
from .model import FinetuneModel, freeze_unused, layer_ids, param_groups, relative_position_index
from .report import FinetuneRun, predictions_frame, read_log
from .trainer import BEST_STAGED, Finetuner, _load_weights, _metrics, _warn_config_change, load_checkpoint, predict

__all__ = [
    "FinetuneConfig", "MONITORS", "FinetuneModel", "freeze_unused", "layer_ids", "param_groups",
    "relative_position_index", "WarmupCosine", "ShardedBatchSampler", "REFERENCE_STD", "ImageDataset",
    "build_transforms", "tta_transforms", "norm_stats", "default_image_size", "check_splits", "seed_everything",
    "save_checkpoint", "load_checkpoint", "BEST_STAGED", "Finetuner", "predict", "predictions_frame", "FinetuneRun",
    "read_log", "PandermError",
]
