"""Training and testing of `PanDermTFormer` (docs/REFERENCE.md).

Recipe (defaults = the reference's argparse values; its per-dataset script values are in
the doors `multimodal_finetune/train.py`): Adam with *coupled* L2 weight decay
(`adamw=True` for decoupled AdamW), `CosineAnnealingLR(T_max=epochs)` stepped once per
epoch with no warmup, plain cross entropy divided by `accum_freq`, an optimiser step every
`accum_freq` batches and on the last batch, no gradient clipping (the gradient norm is
logged), a NaN loss ends training with an error. Best checkpoint by val `monitor`: `acc`,
`f1` (macro), `auroc` strictly greater, `loss` less or equal; `patience` non-improving
epochs stop training. Val/test batch = batch_size // 2.

Departures (each documented in docs/REFERENCE.md):
- the weighted sampler works for every dataset (labels come from the table, not `.df`);
- `patience` counts from the first epoch (the reference's counter was unset until the
  first improvement);
- val macro-F1 is unrounded; val/test AUROC exists for K > 2 (one-vs-rest macro);
- checkpoints: `best.pt` / `last.pt` written atomically (`last.pt` has optimiser,
  schedule, AMP scaler, epoch, best value, patience counter and RNG states, so an
  interrupted run resumes; on CPU bit for bit); the train loader's order is drawn from a
  generator seeded by (seed, epoch);
- `freeze_encoders=True`: encoders frozen, their outputs cached once per split with the
  eval transform (no augmentation), only the fusion head trains;
- `precision="amp"` (the library default; fp16 autocast + GradScaler, CUDA only) where the
  reference trained in fp32 (`precision="fp32"`, the doors' default); JSONL log `log.jsonl`;
  wandb only with `wandb=True`;
- the test split is evaluated by `test()` (the door `train.py` calls it at the end, as the
  reference did).
Test outputs (as the reference): `detailed_predictions.csv` (`derm_filename,
cli_filename, true_label, predicted_label, probability_class_0..K-1`),
`evaluation_metrics.csv` (`accuracy, f1_macro, auroc, balanced_acc, sensitivity, aupr,
avg_test_loss`), `confusion_matrix.png`; plus `results.json` with bootstrap CIs (`report.MultimodalRun`). That is the door's
(`reference=True`); `reference=False` writes the same files in panderm's schema (docs/OUTPUTS.md):
`detailed_predictions.csv` as every panderm task's predictions (`image_path` dermoscopic, `image_path_2`
clinical, `label`, `label_name`, `pred`, `pred_name`, `prob_<class>`), metrics by the registry's names
(`PANDERM_METRIC_COLUMNS`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ...errors import ModelError, PandermError, require_finite
from ...metrics import classification_metrics
from ...report import append_jsonl
from ...runtime import grad_scaler
from ...runtime import training_autocast as _autocast
from ...training import check_same_run, load_training_checkpoint, remove_stale_temps, restore_training_state
from ...training import rng_state, seed_everything, weighted_sampler
from ...training import save_training_checkpoint as save_checkpoint
from ...training import seeded_generator as _generator
from .data import IMAGENET_STD, REFERENCE_STD, IMAGENET_MEAN, RESIZE_MODES, MultimodalTable, \
    make_datasets
from .model import FusionConfig, PanDermTFormer
from ...progress import track

log = logging.getLogger(__name__)

MONITORS = ("acc", "loss", "f1", "auroc")
METRIC_COLUMNS = ("accuracy", "f1_macro", "auroc", "balanced_acc", "sensitivity", "aupr", "avg_test_loss")
#: the metrics with `reference=False`: the metric registry's names (panderm.metrics.METRIC_NAMES) + the test loss.
PANDERM_METRIC_COLUMNS = ("accuracy", "macro_f1", "auroc", "balanced_accuracy", "sensitivity", "aupr", "weighted_f1",
                          "avg_test_loss")


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 64
    accum_freq: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-4
    adamw: bool = False
    monitor: str = "acc"
    patience: int = 100
    weighted_sampler: bool = False
    seed: int = 122
    precision: str = "amp"
    num_workers: int = 0
    freeze_encoders: bool = False
    bgr: bool = False
    paired_augmentation: bool = True
    reference_std: bool = False
    resize_mode: str = "antialias"  # "reference": cv2-style resizes (data.PairedTransform)
    drop_path: float | None = None  # None: the reference's rate for the encoder (model.reference_drop_path)
    image_size: int | None = None
    bootstrap: int = 1000
    max_steps: int | None = None
    stop_after_epoch: int | None = None
    wandb: bool = False

    def check(self) -> None:
        require_finite(self, {"lr": "learning_rate"})
        if self.monitor not in MONITORS:
            raise PandermError(f"unknown monitored metric {self.monitor!r}; use one of {', '.join(MONITORS)}",
                               param="monitor")
        for name in ("epochs", "batch_size", "accum_freq"):
            if getattr(self, name) < 1:
                raise PandermError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}", param=name)
        if self.lr <= 0:
            raise PandermError(f"the learning rate must be positive, got {self.lr}", param="learning_rate")
        if self.resize_mode not in RESIZE_MODES:
            raise PandermError(f"unknown resize mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise PandermError(f"the drop-path rate must be in [0, 1), got {self.drop_path}", param="drop_path")


class _CachedFeatures(Dataset):
    def __init__(self, cli, der, meta, labels):
        self.cli, self.der, self.meta, self.labels = cli, der, meta, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.cli[i], self.der[i], self.meta[i], self.labels[i], i


def _opt(t):
    return None if t is None or t.numel() == 0 or t.shape[-1] == 0 else t


class MultimodalTrainer:
    """Build the model for `table`, train with `fit()`, evaluate with `test()`."""

    def __init__(self, encoder, table: MultimodalTable, fusion: FusionConfig, cfg: TrainConfig, out_dir,
                 device="cpu"):
        cfg.check()
        self.cfg, self.table, self.encoder = cfg, table, encoder
        self.device = torch.device(device)
        self.out = Path(out_dir)
        self.n_classes = table.num_classes
        fusion.num_classes = table.num_classes
        meta_mode = "none"
        if fusion.use_meta:
            meta_mode = "text" if fusion.use_text_encoder else "onehot"
        size = cfg.image_size or encoder.preprocess_spec.size
        self.datasets = make_datasets(
            table, meta=meta_mode, tokenizer=encoder.tokenize if meta_mode == "text" else None, image_size=size,
            paired_augmentation=cfg.paired_augmentation, bgr=cfg.bgr, mean=IMAGENET_MEAN,
            std=REFERENCE_STD if cfg.reference_std else IMAGENET_STD, resize_mode=cfg.resize_mode)
        if meta_mode == "onehot":
            fusion.meta_in_dim = self.datasets["train"].vocab.dim
        seed_everything(cfg.seed)
        self.model = PanDermTFormer(encoder, fusion, freeze_encoders=cfg.freeze_encoders,
                                    drop_path=cfg.drop_path).to(self.device)
        self.fusion_cfg = fusion
        self._cache: dict[str, Dataset] = {}

    # -- data ----------------------------------------------------------------------------
    def _dataset(self, split: str) -> Dataset:
        if not self.cfg.freeze_encoders:
            return self.datasets[split]
        if split not in self._cache:
            self._cache[split] = self._encode_split(split)
        return self._cache[split]

    @torch.no_grad()
    def _encode_split(self, split: str) -> Dataset:
        ds = self.datasets[split]
        was = ds.transform.train
        ds.transform.train = False  # cached features: the eval transform, also for train
        try:
            loader = DataLoader(ds, batch_size=max(self.cfg.batch_size, 1), shuffle=False,
                                num_workers=self.cfg.num_workers)
            parts = {"cli": [], "der": [], "meta": [], "y": []}
            self.model.eval()
            for cli, der, meta, y, _ in loader:
                with _autocast(self.device, self.cfg.precision):
                    c, d, m = self.model.encode(meta.to(self.device), cli.to(self.device), der.to(self.device))
                n = len(y)
                for key, t in (("cli", c), ("der", d), ("meta", m)):
                    parts[key].append(t.float().cpu() if t is not None else torch.zeros(n, 0))
                parts["y"].append(y)
        finally:
            ds.transform.train = was
        cat = {k: torch.cat(v) for k, v in parts.items()}
        log.info("multimodal: cached %s features for %d %s cases", "frozen-encoder", len(cat["y"]), split)
        return _CachedFeatures(cat["cli"], cat["der"], cat["meta"], cat["y"])

    def _train_loader(self, epoch: int) -> DataLoader:
        ds = self._dataset("train")
        g = _generator(self.cfg.seed * 1000 + epoch)
        if self.cfg.weighted_sampler:
            sampler = weighted_sampler(self.datasets["train"].labels, generator=g)
            return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=sampler,
                              num_workers=self.cfg.num_workers, generator=g)
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=True, num_workers=self.cfg.num_workers,
                          generator=g)

    def eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self._dataset(split), batch_size=max(self.cfg.batch_size // 2, 1), shuffle=False,
                          num_workers=self.cfg.num_workers, generator=_generator(0))

    def _logits(self, batch) -> torch.Tensor:
        cli, der, meta = (t.to(self.device, non_blocking=True) for t in batch[:3])
        if self.cfg.freeze_encoders:
            return self.model.fusion(_opt(cli), _opt(der), _opt(meta))
        return self.model(meta, cli, der)

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Probabilities, labels and the mean batch CE (the reference's val/test loss)."""
        self.model.eval()
        probs, labels, losses = [], [], []
        for batch in self.eval_loader(split):
            y = batch[3].to(self.device)
            with _autocast(self.device, self.cfg.precision):
                logits = self._logits(batch)
            logits = logits.float()
            losses.append(float(F.cross_entropy(logits, y).item()))
            probs.append(logits.softmax(1).cpu().numpy())
            labels.append(y.cpu().numpy())
        return {"probs": np.concatenate(probs), "labels": np.concatenate(labels),
                "loss": float(np.mean(losses))}

    # -- training ------------------------------------------------------------------------
    def _build_optim(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        kind = torch.optim.AdamW if self.cfg.adamw else torch.optim.Adam
        opt = kind(params, lr=self.cfg.lr, betas=(0.9, 0.999), weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)
        scaler = grad_scaler(self.device, self.cfg.precision)
        return opt, sched, scaler

    def _meta(self) -> dict:
        return {"n_classes": self.n_classes, "model_id": self.encoder.model_id, "fusion": asdict(self.fusion_cfg),
                "config": asdict(self.cfg), "classnames": list(self.table.classnames or [])}

    def _weights(self) -> dict:
        if self.cfg.freeze_encoders:
            return {"fusion": self.model.fusion.state_dict()}
        return {"model": self.model.state_dict()}

    def load_weights(self, payload: dict, source="checkpoint") -> None:
        try:
            if "fusion" in payload:
                self.model.fusion.load_state_dict(payload["fusion"])
            else:
                self.model.load_state_dict(payload.get("model", payload), strict=True)
        except RuntimeError as exc:
            # one line: torch's message spans lines; say which keys are missing / unexpected
            state = payload.get("fusion", payload.get("model", payload)) if isinstance(payload, dict) else {}
            target = self.model.fusion if "fusion" in payload else self.model
            want, have = set(target.state_dict()), set(state) if isinstance(state, dict) else set()
            missing, unexpected = sorted(want - have), sorted(have - want)
            if missing or unexpected:
                def some(keys):
                    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

                detail = f"missing {len(missing)} key(s) ({some(missing)}), unexpected {len(unexpected)} ({some(unexpected)})"
            else:
                detail = " ".join(line.strip() for line in str(exc).splitlines()[1:] if line.strip())[:300]
            raise ModelError(f"{source}: does not fit this model/flags: {detail}") from exc

    # settings that shape the model (or its inputs) and so must match between training and test
    _MODEL_KEYS = ("use_cli", "use_derm", "use_meta", "use_text_encoder", "fusion", "meta_fusion", "att_depth",
                   "num_head", "meta_att_depth", "meta_num_head", "meta_dim", "meta_in_dim", "out",
                   "use_visual_embedding_layer", "pool")
    _FLAG_OF = {"meta_fusion": "meta_fusion_mode", "out": "head", "pool": "encoder_pool"}

    def config_diff(self, meta: dict | None) -> tuple[str, tuple[str, ...]]:
        """('trained with use_meta=True; this run has use_meta=False', the settings that differ) from a
        checkpoint's meta, or ('', ())."""
        if not isinstance(meta, dict):
            return "", ()
        trained, now = dict(meta.get("fusion") or {}), asdict(self.fusion_cfg)
        keys = [k for k in self._MODEL_KEYS if k in trained and trained[k] != now.get(k)]
        if "meta_in_dim" in keys and len(keys) > 1:
            keys.remove("meta_in_dim")  # follows from use_meta / use_text_encoder
        pairs = [(k, trained[k], now.get(k)) for k in keys]
        cfg_then = (meta.get("config") or {}).get("freeze_encoders")
        if cfg_then is not None and cfg_then != self.cfg.freeze_encoders:
            pairs.append(("freeze_encoders", cfg_then, self.cfg.freeze_encoders))
        model_then = meta.get("model_id")
        if model_then and model_then != self.encoder.model_id:
            pairs.append(("model", model_then, self.encoder.model_id))
        if not pairs:
            return "", ()
        params = tuple(self._FLAG_OF.get(k, k) for k, _, _ in pairs if k not in ("model", "meta_in_dim"))
        return (f"trained with {', '.join(f'{k}={a!r}' for k, a, _ in pairs)}; "
                f"this run has {', '.join(f'{k}={b!r}' for k, _, b in pairs)}"), params

    def _val_value(self, val: dict) -> float:
        m = self.cfg.monitor
        v = {"acc": val["accuracy"], "f1": val["macro_f1"], "auroc": val["auroc"], "loss": -val["loss"]}[m]
        return -math.inf if v is None or math.isnan(v) else v

    def fit(self, resume: bool = False) -> dict:
        cfg, model, dev = self.cfg, self.model, self.device
        opt, sched, scaler = self._build_optim()
        start, best, best_epoch, bad = 0, -math.inf, None, 0
        last = self.out / "last.pt"
        remove_stale_temps(self.out, ("last.pt", "best.pt", "log.jsonl"))  # a run killed while writing left these
        if resume and last.is_file():
            ck = load_training_checkpoint(last, _LAST_KEYS, "multimodal checkpoint")
            check_same_run(ck["meta"], last, self.n_classes, self.encoder.model_id, "use another output folder")
            self.load_weights(ck, str(last))
            restore_training_state(ck, opt, sched, scaler)
            start, best, best_epoch, bad = ck["epoch"] + 1, ck["best_metric"], ck["best_epoch"], ck["bad_epochs"]
            log.info("multimodal: resumed from %s after epoch %d", last, ck["epoch"])
        run = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise PandermError("wandb logging needs the wandb package: pip install wandb", param="wandb",
                                   drop=True) from exc
            run = wandb.init(project="multimodality-classification", config=self._meta())
        history, stopped = [], None
        for epoch in range(start, cfg.epochs):
            if bad >= cfg.patience:
                stopped = "patience"
                break
            model.train()
            t0, losses, norms = time.time(), [], []
            loader = self._train_loader(epoch)
            n_batches = min(len(loader), cfg.max_steps * cfg.accum_freq) if cfg.max_steps else len(loader)
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(track(loader, f"multimodal epoch {epoch + 1}/{cfg.epochs}", total=n_batches,
                                            unit="batch")):
                if i >= n_batches:
                    break
                y = batch[3].to(dev)
                with _autocast(dev, cfg.precision):
                    logits = self._logits(batch)
                loss = F.cross_entropy(logits.float(), y)
                if not torch.isfinite(loss):
                    raise PandermError(f"multimodal: loss is {loss.item()} at epoch {epoch} step {i}; "
                                       "lower the learning rate", param="learning_rate")
                scaler.scale(loss / cfg.accum_freq).backward()
                losses.append(float(loss.item()))
                if (i + 1) % cfg.accum_freq == 0 or i + 1 == n_batches:
                    scaler.unscale_(opt)
                    params = [p for p in model.parameters() if p.grad is not None]
                    norms.append(float(torch.nn.utils.clip_grad_norm_(params, float("inf"))) if params else 0.0)
                    scaler.step(opt)
                    scaler.update()
                    opt.zero_grad(set_to_none=True)
            lr = opt.param_groups[0]["lr"]
            sched.step()
            record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                      "step_losses": losses, "gradient_norm": norms, "lr": lr}
            val = self.evaluate("val")
            vm = classification_metrics(val["labels"], val["probs"], ["accuracy", "macro_f1", "auroc"])
            record["val"] = {**vm, "loss": val["loss"]}
            value = self._val_value(record["val"])
            improved = value >= best if cfg.monitor == "loss" else value > best
            if improved:
                best, best_epoch, bad = value, epoch, 0
                save_checkpoint(self.out / "best.pt", {**self._weights(), "epoch": epoch, "best_metric": best,
                                                       "meta": self._meta()})
            else:
                bad += 1
            record.update(monitor=cfg.monitor, best_metric=best, best_epoch=best_epoch, bad_epochs=bad,
                          seconds=round(time.time() - t0, 3))
            save_checkpoint(last, {**self._weights(), "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                                   "best_metric": best, "best_epoch": best_epoch, "bad_epochs": bad,
                                   "rng": rng_state(), "meta": self._meta()})
            append_jsonl(self.out / "log.jsonl", record)
            if run is not None:
                run.log({"train_loss": record["train_loss"], "lr": lr,
                         **{f"val_{k}": v for k, v in record["val"].items()}}, step=epoch)
            history.append(record)
            log.info("epoch %d: loss %.4f val acc %.4f loss %.4f", epoch, record["train_loss"] or float("nan"),
                     vm["accuracy"], val["loss"])
            if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch and epoch < cfg.epochs - 1:
                return {"stopped_after_epoch": epoch, "history": history}
        if run is not None:
            run.finish()
        return {"history": history, "best_epoch": best_epoch, "best_metric": best, "stopped": stopped}

    # -- test ----------------------------------------------------------------------------
    def test(self, checkpoint=None) -> dict:
        """Test-split probabilities and metrics with `checkpoint` (default OUT/best.pt) loaded."""
        path = Path(checkpoint) if checkpoint else self.out / "best.pt"
        ck = load_training_checkpoint(path, (), "multimodal checkpoint")
        meta = ck.get("meta")
        if meta is not None and meta.get("n_classes") != self.n_classes:
            raise PandermError(f"{path}: the checkpoint has {meta.get('n_classes')} classes, the data "
                               f"{self.n_classes}")
        diff, params = self.config_diff(meta)
        try:
            self.load_weights(ck, str(path))
        except ModelError as exc:
            if not diff:
                raise ModelError(f"{exc}; the checkpoint was trained with a different model configuration: "
                                 "give test the model settings used for training") from exc
            raise ModelError(f"{path}: the checkpoint was trained with a different model configuration: {diff}; "
                             "give test the model settings used for training", param=params or None) from exc
        if diff:
            log.warning("multimodal: %s: %s", path, diff)
        res = self.evaluate("test")
        res["metrics"] = test_metrics(res["labels"], res["probs"], res["loss"])
        res["epoch"] = ck.get("epoch")
        return res


_LAST_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "best_metric", "best_epoch", "bad_epochs", "rng", "meta")


def test_metrics(labels, probs, loss: float) -> dict:
    """The reference's test metrics (eval_metrics.py), by their CSV names."""
    from sklearn.metrics import recall_score

    m = classification_metrics(labels, probs, ["accuracy", "macro_f1", "auroc", "balanced_accuracy", "aupr"])
    probs = np.asarray(probs)
    # The reference's recall_score: macro over the classes in y_true OR y_pred, so a class predicted but absent
    # from the test labels counts as recall 0 (our `sensitivity` averages over the classes present only).
    sens = recall_score(np.asarray(labels), probs.argmax(1), average="binary" if probs.shape[1] == 2 else "macro",
                        zero_division=0)
    return {"accuracy": m["accuracy"], "f1_macro": m["macro_f1"], "auroc": m["auroc"],
            "balanced_acc": m["balanced_accuracy"], "sensitivity": float(sens), "aupr": m["aupr"],
            "avg_test_loss": loss}


__all__ = ["TrainConfig", "MultimodalTrainer", "test_metrics", "MONITORS",
           "METRIC_COLUMNS", "PANDERM_METRIC_COLUMNS"]
