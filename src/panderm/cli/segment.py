"""`panderm segment train|test`: lesion segmentation on any tappable backbone."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..report import RANDOM_BACKBONE
from .args import add_model_args
from .doors import resolve_device

#: params whose option has another name (the rest: the option with that destination)
FLAGS = {"data_root": "--isic-root"}


def _tables(args, splits):
    from ..tasks.segmentation.data import load_isic2018, load_seg_csv

    out = {}
    for name, split in splits:
        if args.isic_root:
            out[name] = load_isic2018(args.isic_root, split, args.num_classes)
        else:
            out[name] = load_seg_csv(args.csv, split, args.image_col, args.mask_col, args.split_col, args.root,
                                     args.num_classes)
    return out


def _config(args, encoder):
    from ..tasks.segmentation.train import SegConfig

    spec = encoder.preprocess_spec
    return SegConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                     loss=args.loss, augment=args.augment, freeze_encoder=args.freeze_encoder,
                     percent_data=args.percent_data, seed=args.seed, image_size=args.image_size or spec.size,
                     head_channels=args.head_channels, norm=args.norm,
                     mean=tuple(spec.mean) if args.normalize == "model" else (0.5, 0.5, 0.5),
                     std=tuple(spec.std) if args.normalize == "model" else (0.5, 0.5, 0.5),
                     precision=args.precision, workers=args.workers or 0, keep_largest=not args.no_largest_component,
                     empty_rule=True)


def _train(args) -> None:
    from ..models import load_encoder
    from ..report import format_table, lock_run_dir, prepare_run_dir, provenance, write_report
    from ..tasks.segmentation.data import percent_subset
    from ..tasks.segmentation.report import SegmentationRun
    from ..tasks.segmentation.train import Segmenter

    from ..errors import PandermError

    if args.csv is None and args.isic_root is None:
        raise PandermError("give the data: --csv (image, mask and split columns) or --isic-root")
    tables = _tables(args, [("train", args.train_split), ("val", args.val_split)])
    if args.percent_data < 100:
        tables["train"] = percent_subset(tables["train"], args.percent_data, args.seed)
    test_tables = {}
    if args.test_split:
        test_tables = _tables(args, [("test", args.test_split)])
    out = Path(args.out)
    resuming = args.resume and (out / "last.pt").is_file()
    if resuming:
        lock_run_dir(out)
    else:
        prepare_run_dir(out, args.overwrite)
    device = resolve_device(args.device)
    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=device,
                           allow_random_init=args.allow_random_init)
    cfg = _config(args, encoder)
    seg = Segmenter(encoder, cfg, out, device, tables["train"].num_classes)
    stop = (lambda e: e == args.stop_after_epoch) if args.stop_after_epoch is not None else None
    fit = seg.fit(tables["train"], tables["val"], resume=args.resume, on_epoch=stop)
    if "stopped_after_epoch" in fit:
        print(f"stopped after epoch {fit['stopped_after_epoch']}; continue with --resume")
        return
    seg.load_weights(out / "best.pt")
    prov = provenance(encoder, [args.csv] if args.csv else [], seed=args.seed)
    info = {"task": "segmentation", "best_epoch": fit["best_epoch"], "best_val_jaccard": fit["best_val_jaccard"],
            "n_train": len(tables["train"]), "n_val": len(tables["val"]), "config": json.loads(
                json.dumps(cfg.__dict__, default=list)), "history": fit["history"]}
    if test_tables:
        table = test_tables["test"]
        run = SegmentationRun({**info, "split": args.test_split}, seg.evaluate(table, args.bootstrap, 42), table,
                              cfg.keep_largest)
    else:
        run = SegmentationRun(info)
    write_report(run, out, prov, encoder.random_init, warning=RANDOM_BACKBONE)
    if encoder.random_init:
        print(RANDOM_BACKBONE)
    print(f"best val Jaccard {fit['best_val_jaccard']:.4f} at epoch {fit['best_epoch']}")
    rows = run.rows()
    if rows:
        print(format_table(rows))
    print(f"wrote {out / 'results.json'}")


def _test(args) -> None:
    from ..errors import PandermError
    from ..models import load_encoder
    from ..report import format_table, prepare_run_dir, provenance, write_report
    from ..tasks.segmentation.report import SegmentationRun
    from ..tasks.segmentation.train import SegConfig, Segmenter
    from ..checkpoint_io import load_training_checkpoint

    run = Path(args.run)
    ck = load_training_checkpoint(run / "best.pt", ("model", "config"), "segmentation checkpoint")
    cfg_dict = json.loads(ck["config"])
    cfg_dict["mean"], cfg_dict["std"] = tuple(cfg_dict["mean"]), tuple(cfg_dict["std"])
    cfg = SegConfig(**cfg_dict)
    if args.batch_size:
        cfg.batch_size = args.batch_size
    if args.csv is None and args.isic_root is None:
        raise PandermError("give the data: --csv (image, mask and split columns) or --isic-root")
    table = _tables(args, [("test", args.split)])["test"]
    out = prepare_run_dir(Path(args.out), args.overwrite)
    device = resolve_device(args.device)
    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=device,
                           allow_random_init=args.allow_random_init)
    seg = Segmenter(encoder, cfg, out, device, table.num_classes)
    seg.load_weights(run / "best.pt")
    ev = seg.evaluate(table, args.bootstrap, 42)
    prov = provenance(encoder, [args.csv] if args.csv else [], seed=cfg.seed, inputs=[run / "best.pt"])
    result = SegmentationRun({"task": "segmentation", "split": args.split, "run": str(run)}, ev, table,
                             cfg.keep_largest)
    write_report(result, out, prov, encoder.random_init, warning=RANDOM_BACKBONE)
    if encoder.random_init:
        print(RANDOM_BACKBONE)
    print(format_table(result.rows()))
    print(f"wrote {out / 'results.json'}")


def _data_args(p) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", default=None, help="CSV with image, mask and split columns")
    g.add_argument("--isic-root", default=None,
                   help="ISIC 2018 Task 1 folder ({Training,Validation,Test}_Data + *_GroundTruth) instead of --csv")
    g.add_argument("--root", default=None, help="folder the CSV's paths are relative to (default: the CSV's folder)")
    g.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    g.add_argument("--mask-col", default="mask_path", help="CSV column holding the mask paths")
    g.add_argument("--split-col", default="split", help="CSV column holding train / val / test")
    g.add_argument("--num-classes", type=int, default=None,
                   help="masks hold class ids 0..K-1 (default: binary masks, lesion where value > 127)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0: off)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def register(sub, add_model_args=add_model_args) -> None:
    seg = sub.add_parser("segment", help="lesion segmentation: UPerNet head on four encoder depths",
                         allow_abbrev=False)
    ssub = seg.add_subparsers(dest="segment_command", required=True)
    p = ssub.add_parser("train", help="train (and test) a segmentation head, optionally the encoder too",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    p.set_defaults(batch_size=8, precision="amp")
    _data_args(p)
    p.add_argument("--train-split", default="train", help="--split-col value of the training rows")
    p.add_argument("--val-split", default="val", help="--split-col value of the validation rows")
    p.add_argument("--test-split", default="test", help="scored with best.pt after training ('' to skip)")
    g = p.add_argument_group("recipe")
    g.add_argument("--epochs", type=int, default=20, help="training epochs")
    g.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    g.add_argument("--loss", default="ce", choices=["ce", "ce+dice"], help="ce: cross-entropy; ce+dice adds soft Dice")
    g.add_argument("--augment", default="geometric", choices=["geometric", "colour", "geometric+colour", "none"],
                   help="geometric: flips and 90° rotations of image and mask; colour: the reference's jitter")
    g.add_argument("--freeze-encoder", action="store_true", help="train only the neck and head on frozen features")
    g.add_argument("--percent-data", type=float, default=100.0,
                   help="train on a seeded subset of this percent of the training rows (sorted, reproducible)")
    g.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's)")
    g.add_argument("--head-channels", type=int, default=256, help="channels of the UPerNet head")
    g.add_argument("--norm", default="bn", choices=["bn", "gn"], help="normalisation in the neck and head")
    g.add_argument("--normalize", default="reference", choices=["reference", "model"],
                   help="reference: mean = std = 0.5; model: the model's own mean/std")
    g.add_argument("--no-largest-component", action="store_true",
                   help="score the raw prediction instead of its largest connected component")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (starts fresh when absent)")
    p.add_argument("--stop-after-epoch", type=int, default=None, help="end after this epoch (tests --resume)")
    p.add_argument("--out", default="runs/segment", help="run folder")
    p.set_defaults(func=_train, door_flags=FLAGS)

    p = ssub.add_parser("test", help="score a trained run's best.pt on a split",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    p.set_defaults(batch_size=None)
    _data_args(p)
    p.add_argument("--run", required=True, help="a `panderm segment train` folder (its best.pt and settings)")
    p.add_argument("--split", default="test", help="--split-col value of the rows to score")
    p.add_argument("--out", default="runs/segment-test", help="output folder")
    p.set_defaults(func=_test, door_flags=FLAGS)
