"""`panderm finetune`: full finetuning of any vision backbone + linear head (PanDerm v1 recipe).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..analysis.attach import check_group_columns
from ..report import RANDOM_BACKBONE
from .args import add_analysis_args, add_model_args, add_split_table_args, settings_from_args
from .doors import precheck, resolve_device

_RUN_FILES = ("last.pt", "best.pt", "best.pt.next", "log.jsonl", "results.json")


def config_from_args(args):
    from ..tasks.finetune import FinetuneConfig

    precision = {"fp16": "amp", "bf16": "amp_bf16"}.get(args.precision, args.precision)
    return FinetuneConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        warmup_epochs=args.warmup_epochs, layer_decay=args.layer_decay, weight_decay=args.weight_decay,
        drop_path=args.drop_path, rel_pos_bias=not args.disable_rel_pos_bias, mixup=args.mixup, cutmix=args.cutmix,
        smoothing=args.smoothing,
        weighted_sampler=args.weighted_sampler, monitor=args.monitor, tta=args.tta, seed=args.seed,
        image_size=args.image_size, normalize=args.normalize, augment=not args.no_augment,
        num_workers=args.workers if args.workers is not None else 0, precision=precision,
        max_steps=args.max_steps, stop_after_epoch=args.stop_after_epoch, bootstrap=args.bootstrap)


def _val_predictions(tuner, test: dict, analysis) -> tuple | None:
    """(labels, probs) of the val split with the tested weights, for --calibrate temperature (every rank
    predicts: under torchrun the split is sharded and gathered)."""
    if analysis.calibrate != "temperature":
        return None
    probs, labels = tuner.predict_split("val", test["tta"])
    return labels, probs


def _finetune(args) -> None:
    import torch

    from ..errors import DataError

    from ..features import default_workers
    from ..models import load_encoder
    from ..report import format_table, lock_run_dir, prepare_run_dir, provenance, write_report
    from ..tasks import finetune as ft
    from ..data.benchmarks import load_classnames
    from ..tasks.linear_probe.pipeline import load_splits

    classnames = load_classnames(args.classnames) if args.classnames else None
    splits = load_splits(args.csv, args.image_col, args.label_col, args.split_col, root=args.root,
                         classnames=classnames, allow_outside_root=args.allow_outside_root)
    ft.check_splits(splits)
    analysis = settings_from_args(args, n_resamples=args.bootstrap, seed=42)
    check_group_columns(list(splits.tables["test"].frame.columns), analysis, args.csv)
    if analysis.calibrate == "temperature" and "val" not in splits.tables:
        raise DataError(f"{args.csv}: --calibrate temperature fits on the val split, and the CSV has no val rows")
    from ..distributed import barrier, init_from_env, local_device

    rank, world = init_from_env()  # torchrun: one process per device, gradients averaged by DDP
    device = local_device(resolve_device(args.device))
    if args.workers is None:
        args.workers = default_workers(torch.device(device))
    cfg = config_from_args(args)
    cfg.check()
    out = Path(args.out)
    resuming = args.resume and (out / "last.pt").is_file()
    # --resume on a folder holding only this command's files but no last.pt yet (killed before the first
    # checkpoint landed) starts afresh instead of refusing the folder.
    stale = args.resume and out.is_dir() and all(p.name in _RUN_FILES for p in out.iterdir())
    if resuming and rank == 0:
        lock_run_dir(out)
    if not args.eval and not resuming and rank == 0:
        prepare_run_dir(out, args.overwrite or stale)
        for name in _RUN_FILES:  # --overwrite: a fresh run must not append to an old log
            (out / name).unlink(missing_ok=True)
    barrier()
    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=device,
                           allow_random_init=args.allow_random_init)
    tuner = ft.Finetuner(encoder, splits, cfg, out, device=device)
    prov = provenance(encoder, [args.csv], seed=args.seed, extra={"world_size": world})
    if args.eval:
        out.mkdir(parents=True, exist_ok=True)
        test = tuner.test(args.eval)
        val = _val_predictions(tuner, test, analysis)
        if rank:
            return
        run = ft.FinetuneRun(tuner, test, name="eval", val=val)
    else:
        fit = tuner.fit(resume=args.resume)
        if "stopped_after_epoch" in fit:
            if rank == 0:
                print(f"stopped after epoch {fit['stopped_after_epoch']}; continue with --resume")
            return
        test = tuner.test()
        val = _val_predictions(tuner, test, analysis)
        if rank:
            return
        run = ft.FinetuneRun(tuner, test, fit_result=fit, val=val)
    write_report(run, out, prov, encoder.random_init, analysis, warning=RANDOM_BACKBONE, filename=run.filename)
    if encoder.random_init:
        print(RANDOM_BACKBONE)
    print(format_table(run.rows()))
    print(f"wrote {out / run.filename}")


def register(sub, add_model_args=add_model_args) -> None:
    p = sub.add_parser("finetune", help="full finetuning of a vision backbone + linear head (PanDerm v1 recipe)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    p.set_defaults(batch_size=128, precision="amp")
    add_split_table_args(p)
    g = p.add_argument_group("recipe (defaults: the PanDerm v1 finetuning script)")
    g.add_argument("--epochs", type=int, default=50, help="training epochs")
    g.add_argument("--lr", type=float, default=5e-4, help="base lr (no batch-size scaling)")
    g.add_argument("--min-lr", type=float, default=1e-6, help="learning rate at the end of the cosine schedule")
    g.add_argument("--warmup-epochs", type=int, default=10, help="epochs of linear learning-rate warm-up")
    g.add_argument("--layer-decay", type=float, default=0.65, help="layer-wise lr decay (1: off)")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    g.add_argument("--drop-path", type=float, default=0.2, help="stochastic depth (CAE towers and timm ViTs)")
    g.add_argument("--disable-rel-pos-bias", action="store_true",
                   help="PanDerm v1: finetune without the per-block relative position bias the reference adds")
    g.add_argument("--mixup", type=float, default=0.8, help="mixup alpha (0 with --cutmix 0: off)")
    g.add_argument("--cutmix", type=float, default=1.0, help="cutmix alpha")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--weighted-sampler", action="store_true", help="class-balanced sampling, w_c = N/(K n_c)")
    g.add_argument("--monitor", default="auto", choices=["auto", "acc", "recall", "auroc"],
                   help="val metric choosing best.pt; auto: AUROC for 2 classes, else accuracy (the reference)")
    g.add_argument("--tta", action="store_true", help="5-view test-time augmentation for the test split")
    g.add_argument("--image-size", type=int, default=None, help="crop size (default: the model's input size)")
    g.add_argument("--normalize", default="reference", choices=["reference", "imagenet", "model"],
                   help="reference: ImageNet mean, std 0.228 (the reference); imagenet: std 0.229; "
                        "model: the model's own mean/std")
    g.add_argument("--no-augment", action="store_true", help="train on the eval transform")
    p.add_argument("--eval", default=None, metavar="CHECKPOINT",
                   help="only test a saved best.pt/last.pt (build it with the same --model/--checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (starts fresh when absent)")
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling, augmentation, head initialisation)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for test CIs (0: off)")
    p.add_argument("--max-steps", type=int, default=None, help="cap optimiser steps per epoch (smoke tests)")
    p.add_argument("--stop-after-epoch", type=int, default=None,
                   help="end after this epoch's checkpoint, as if interrupted (tests --resume)")
    p.add_argument("--out", default="runs/finetune", help="run folder (checkpoints, log.jsonl, results.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_analysis_args(p, calibrate=True)
    p.set_defaults(func=_finetune, precheck=precheck())
