"""`Finetuner`: one finetuning run (fresh or resumed), its evaluation and its checkpoints."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from ...distributed import barrier, gather_rows, rank_world, shard_indices
from ...errors import DataError, ModelError, PandermError
from ...metrics import classification_metrics
from ...progress import track
from ...report import append_jsonl
from ...runtime import grad_scaler, training_autocast
from ...training import (ShardedBatchSampler, WarmupCosine, check_same_run, load_training_checkpoint,
                         rank_worker_seed, remove_stale_temps, restore_training_state, rng_state,
                         save_training_checkpoint, seed_everything, seeded_generator, trim_log, weighted_sampler)
from ...models.base import Encoder
from .config import FinetuneConfig, _monitor_name, log
from .data import ImageDataset, build_transforms, check_splits, default_image_size, norm_stats, tta_transforms
from .model import FinetuneModel, freeze_unused, param_groups

_LAST_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_metric", "best_epoch", "rng", "meta")
BEST_STAGED = "best.pt.next"  # a new best waits here until last.pt records it


def _load_weights(model: nn.Module, ck: dict, path, model_id: str) -> None:
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        saved = ck.get("meta", {}).get("config", {}).get("rel_pos_bias")
        mismatch = any("relative_position_bias_table" in line for line in str(exc).splitlines())
        if mismatch and saved is not None:
            how = "with" if saved else "without"
            raise ModelError(f"{path}: it was trained {how} the relative position bias", param="disable_rel_pos_bias",
                             drop=bool(saved)) from exc
        raise ModelError(f"{path}: does not fit the model {model_id}: {str(exc).splitlines()[0]}",
                         param="model") from exc


def load_checkpoint(path, required=("model",)) -> dict:
    return load_training_checkpoint(path, required, "finetune checkpoint")


@torch.no_grad()
def predict(model: FinetuneModel, loader, device, precision="fp32", tta_view=None, views: int = 5,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, labels); with `tta_view` the logits of `views` random views are averaged."""
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
            with training_autocast(device, precision):
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


def _metrics(labels, probs) -> dict:
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
        g = seeded_generator(self.cfg.seed * 100003 + epoch)
        kw = dict(num_workers=self.cfg.num_workers, generator=g, pin_memory=self.device.type == "cuda",
                  persistent_workers=False)
        if self.cfg.weighted_sampler:
            sampler = weighted_sampler(t.labels, num_samples=len(ds), generator=g)
        else:
            sampler = RandomSampler(ds, generator=g)
        if self.world > 1:
            # The loader draws its worker seed from `g` before the sampler runs, exactly as in one process;
            # workers then offset it by the rank so ranks do not augment their shares identically.
            return DataLoader(ds, batch_sampler=ShardedBatchSampler(sampler, bs, self.rank, self.world),
                              worker_init_fn=functools.partial(rank_worker_seed, rank=self.rank), **kw)
        return DataLoader(ds, sampler=sampler, batch_size=bs, drop_last=True, **kw)

    def eval_loader(self, split: str, tta: bool = False, indices=None) -> DataLoader:
        t = self.splits.tables[split]
        transform = tta_transforms(self.size)[0] if tta else self.eval_t
        bs = self._eval_batch()
        ds = ImageDataset(t.paths, t.labels, transform)
        return DataLoader(ds if indices is None else Subset(ds, indices), batch_size=bs, shuffle=False,
                          num_workers=self.cfg.num_workers, generator=seeded_generator(0))

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
        scaler = grad_scaler(self.device, self.cfg.precision)
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
            check_same_run(ck["meta"], last, self.n_classes, self.encoder.model_id,
                           "use another run folder or overwrite it")
            _warn_config_change(ck["meta"].get("config", {}), asdict(cfg))
            _load_weights(model, ck, last, self.encoder.model_id)
            restore_training_state(ck, opt, sched, scaler)
            start, best, best_epoch = ck["epoch"] + 1, ck["best_metric"], ck["best_epoch"]
            if self.rank == 0:
                trim_log(self.out / "log.jsonl", ck["epoch"])
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
                with training_autocast(dev, cfg.precision):
                    logits = train_model(x)
                loss = self._loss(logits.float(), y_soft, y)
                shown = loss.detach().clone()
                if self.world > 1:  # equal shares: the mean of the ranks' means is the global batch's loss
                    torch.distributed.all_reduce(shown)
                    shown /= self.world
                if not torch.isfinite(shown):
                    raise PandermError(f"finetune: loss is {loss.item()} at epoch {epoch} step {i}; lower the learning rate",
                                       param="lr")
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
                # Log, new best (staged), last, then the staged best takes its place: a kill anywhere leaves
                # best.pt and last.pt of the same history. A resume reruns an epoch last.pt does not hold,
                # trim_log drops its stale log line and _settle_best finishes or discards a staged best.
                append_jsonl(self.out / "log.jsonl", record)
                if improved:
                    save_training_checkpoint(self.out / BEST_STAGED, {"model": model.state_dict(), "epoch": epoch,
                                                             "best_metric": best, "meta": self._meta()})
                save_training_checkpoint(last, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                       "epoch": epoch, "best_metric": best, "best_epoch": best_epoch,
                                       "rng": rng_state(), "meta": self._meta()})
                if improved:
                    os.replace(self.out / BEST_STAGED, self.out / "best.pt")
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
                        "best.pt is the untrained head of epoch %d; use more epochs or steps, or no warm-up epochs",
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
            log.warning("finetune: checkpoint was trained from %s, the model is %s", meta.get("model_id"),
                        self.encoder.model_id)
        _load_weights(self.model, ck, checkpoint or self.out / "best.pt", self.encoder.model_id)
        tta = self.cfg.tta if tta is None else tta
        probs, labels = self.predict_split("test", tta)
        return {"epoch": ck.get("epoch"), "tta": tta, "probs": probs, "labels": labels,
                "metrics": _metrics(labels, probs)}
