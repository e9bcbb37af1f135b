"""`panderm multimodal train|test`: multimodal finetuning (clinical + dermoscopic images + metadata).

The handlers here also serve the reference doors (panderm.compat.multimodal_door): `panderm multimodal`
defaults to RGB, std 0.229, antialiased resizing and `--precision amp`, with a flag back to each reference
behaviour; the doors default to the reference's computation (docs/REFERENCE.md).
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from ..report import RANDOM_WEIGHTS
from .args import add_analysis_args, add_model_args, settings_from_args
from .doors import check_inputs, resolve_device
from .multimodal_args import (
    _MODEL_ALIASES, CSV_COLUMNS, REFERENCE_DATA_DIRS, add_recipe_args, add_train_args)

_RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "results.json", "results_test.json", "detailed_predictions.csv",
              "evaluation_metrics.csv", "confusion_matrix.png", "reliability.png", "subgroups.csv", "subgroups.png")

#: `panderm multimodal`'s hints for an error's `param` (other params: the option with that destination)
FLAGS = {"run_dir": "pass --overwrite or choose another --output-dir", "modality": "--use-cli or --use-derm"}


def find_best_checkpoint(folder) -> Path:
    """`best.pt` in `folder`, else the reference's `best{acc|valloss|f1|auroc}_model_{epoch}.pth` (latest epoch)."""
    from ..errors import PandermError

    folder = Path(folder)
    if (folder / "best.pt").is_file():
        return folder / "best.pt"
    found = []
    for f in folder.glob("best*_model_*.pth") if folder.is_dir() else ():
        m = re.fullmatch(r"best(?:acc|valloss|f1|auroc)_model_(\d+)\.pth", f.name)
        if m:
            found.append((int(m.group(1)), f.stat().st_mtime, f))
    if not found:
        raise PandermError(f"no best checkpoint (best.pt or best*_model_<epoch>.pth) in {folder}; "
                           "train first or give the checkpoint's path", param="model_path")
    return max(found)[2]


def _none_or(value):
    """A column flag's value; '' / 'none' mean no such column."""
    return None if value is None or str(value).strip().lower() in ("", "none") else value


def _load_table(dataset: str, path: str, allow_outside_root: bool = False, args=None):
    """The dataset's table; `args` gives the generic CSV loader's column flags (dataset "csv")."""
    from ..errors import DataError, PandermError
    from ..tasks.multimodal.data import load_derm7pt, load_milk11, load_multimodal_csv, load_pad_ufes20

    cols = {k: getattr(args, k, v) for k, v in CSV_COLUMNS.items()} if args is not None else dict(CSV_COLUMNS)
    if dataset != "csv":
        given = [k for k, v in cols.items() if v != CSV_COLUMNS[k]]
        if given:
            ds = _flag(args, "dataset")
            raise PandermError(f"{', '.join(_flag(args, k) for k in given)} appl{'ies' if len(given) == 1 else 'y'} "
                               f"to {ds} csv only ({ds} {dataset} has fixed columns)")
        loaders = {"derm7pt": load_derm7pt, "milk11": load_milk11, "pad": load_pad_ufes20}
        try:
            return loaders[dataset](path, allow_outside_root=allow_outside_root)
        except DataError as exc:
            where = Path(path)
            if (where.is_dir() and not (where / "meta").is_dir()) or (dataset != "pad" and where.is_file()):
                ds, cols = _flag(args, "dataset"), ", ".join(_flag(args, c) for c in
                                                              ("clinical_col", "derm_col", "label_col", "split_col"))
                exc.args = (f"{exc}; {ds} {dataset} reads the dataset's meta/ folder layout: for one CSV of your own "
                            f"use {ds} csv {_flag(args, 'data_path')} FILE.csv (columns clinical_path, derm_path, "
                            f"label, split; other names with {cols})",)
            raise
    meta_cols = [c.strip() for c in str(cols["meta_cols"]).split(",") if c.strip()] if cols["meta_cols"] else []
    return load_multimodal_csv(path, clinical_col=_none_or(cols["clinical_col"]), derm_col=_none_or(cols["derm_col"]),
                               label_col=cols["label_col"], split_col=cols["split_col"], meta_columns=meta_cols,
                               prompt_col=_none_or(cols["prompt_col"]), allow_outside_root=allow_outside_root,
                               num_classes=getattr(args, "class_num", None))  # K = max label + 1 without it


def _flag(args, dest: str) -> str:
    """This command line's spelling of the option with destination `dest` (`panderm multimodal` and the two
    reference doors share these handlers but not their spellings)."""
    return getattr(args, "flag_of", {}).get(dest, "--" + dest)


def _with_flags(fn, parser, flags: dict[str, str] | None = None):
    """`fn(args)` with `args.flag_of` set from `parser` (the one that parsed `args`); `flags` (the door's FLAGS)
    picks a spelling where an option has several."""
    from .doors import door_flags

    # the door's map without its whole hints: a spelling to put inside a sentence
    flag_of = {k: v for k, v in door_flags(parser, flags).items() if v.startswith("--") and " " not in v}

    def run(args):
        args.flag_of = flag_of
        return fn(args)

    run.__name__ = getattr(fn, "__name__", "run")
    return run


def _check_early(args, train: bool) -> None:
    """A missing data path or an output folder holding a run: one line before torch is imported."""
    again = getattr(args, "overwrite", False) or getattr(args, "resume", False)
    check_inputs([(args.data_path, _flag(args, "data_path"))],
                 (args.output_dir, _flag(args, "output_dir")) if train else None, overwrite=again,
                 overwrite_flag=_flag(args, "overwrite"))


def _build(args, train: bool):
    from ..errors import PandermError

    if not args.data_path:
        if args.dataset not in REFERENCE_DATA_DIRS:
            raise PandermError(f"give the dataset root with {_flag(args, 'data_path')} (no default for "
                               f"{_flag(args, 'dataset')} {args.dataset})")
        args.data_path = REFERENCE_DATA_DIRS[args.dataset]
    _check_early(args, train)
    from ..models import load_encoder
    from ..tasks.multimodal.model import FusionConfig
    from ..tasks.multimodal.train import MultimodalTrainer, TrainConfig

    table = _load_table(args.dataset, args.data_path, getattr(args, "allow_outside_root", False), args)
    if args.class_num is not None and args.class_num != table.num_classes:
        raise PandermError(f"{_flag(args, 'class_num')} {args.class_num} but {args.data_path} has "
                           f"{table.num_classes} classes")
    args.analysis = _analysis(args, table)  # before the run folder is claimed and the model loads
    use_meta = bool(args.use_meta)
    fusion = FusionConfig(
        num_classes=table.num_classes, use_cli=args.use_cli, use_derm=args.use_derm, use_meta=use_meta,
        use_text_encoder=args.use_text_encoder, fusion=args.fusion, meta_fusion=args.meta_fusion_mode,
        att_depth=args.att_depth, num_head=args.num_head, meta_att_depth=args.meta_att_depth,
        meta_num_head=args.meta_num_head, meta_dim=args.meta_dim, out=args.head,
        use_visual_embedding_layer=args.use_visual_embedding_layer,
        pool=args.encoder_pool if args.encoder_pool in ("cls", "features") else "auto")
    fusion.check()
    cfg = TrainConfig(
        epochs=args.epochs if train else 1, batch_size=args.batch_size, accum_freq=getattr(args, "accum_freq", 1),
        lr=getattr(args, "learning_rate", 1e-4), weight_decay=getattr(args, "weight_decay", 1e-4),
        adamw=getattr(args, "adamw", False), monitor=getattr(args, "monitor", "acc"),
        patience=getattr(args, "patience", 100), weighted_sampler=getattr(args, "weight_sampler", False),
        seed=args.seed, precision=args.precision, num_workers=args.workers or 0,
        freeze_encoders=args.freeze_encoders, bgr=args.bgr, paired_augmentation=not args.unpaired,
        reference_std=args.reference_std, resize_mode=args.resize_mode, drop_path=args.drop_path,
        image_size=args.image_size, bootstrap=args.bootstrap, max_steps=getattr(args, "max_steps", None),
        stop_after_epoch=getattr(args, "stop_after_epoch", None), wandb=getattr(args, "wandb", False))
    cfg.check()
    out = Path(args.output_dir)
    if train:
        from ..report import lock_run_dir, prepare_run_dir

        if args.resume and (out / "last.pt").is_file():
            lock_run_dir(out)
        else:
            prepare_run_dir(out, args.overwrite)
            for name in _RUN_FILES:
                (out / name).unlink(missing_ok=True)
    model_id = _MODEL_ALIASES.get(args.model, args.model)
    device = args.device
    if getattr(args, "cuda", None) is not None:
        # The reference's scripts all pass `--cuda True`: it asks for the GPU where there is one (CPU with a
        # warning otherwise), whereas an explicit `--device cuda` without a GPU is an error.
        import torch

        device = "cuda" if args.cuda and torch.cuda.is_available() else "cpu"
        if args.cuda and device == "cpu":
            logging.getLogger(__name__).warning("%s: no CUDA GPU is available; running on CPU", _flag(args, "cuda"))
    encoder = load_encoder(model_id, checkpoint=args.checkpoint, device=resolve_device(device),
                           allow_random_init=args.allow_random_init)
    trainer = MultimodalTrainer(encoder, table, fusion, cfg, out, device=encoder.device)
    if args.hidden_dim is not None and args.hidden_dim != trainer.model.fusion.hidden_dim:
        logging.getLogger(__name__).info("hidden_dim %d ignored: the encoder gives %d", args.hidden_dim,
                                         trainer.model.fusion.hidden_dim)
    return trainer, encoder


def _print_metrics(m: dict) -> None:
    print(f"Accuracy: {100 * m['accuracy']:.2f}%  F1: {m['f1_macro']:.4f}  AUROC: {m['auroc']:.4f}  "
          f"AUPR: {m['aupr']:.4f}  BACC: {m['balanced_acc']:.4f}  Recall: {m['sensitivity']:.4f}")


def data_files(path) -> list[Path]:
    """The CSV files a multimodal dataset is read from (one CSV, or its meta/ folder), for provenance."""
    path = Path(path)
    if path.is_file():
        return [path]
    folder = path / "meta" if (path / "meta").is_dir() else path
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


def _analysis(args, table):
    """`panderm multimodal`'s analysis settings, checked against the data before the model loads (doors: None)."""
    if getattr(args, "reference", False) or not hasattr(args, "group_col"):
        return None
    from ..analysis.attach import check_group_columns
    from ..errors import DataError

    analysis = settings_from_args(args, n_resamples=args.bootstrap, seed=42)
    if analysis.group_cols:
        check_group_columns(list(table.meta.columns), analysis, args.data_path)
    if analysis.calibrate == "temperature" and not table.split_counts().get("val"):
        raise DataError(f"{args.data_path}: {_flag(args, 'calibrate')} temperature fits on the val split, and the data "
                        "has no val rows")
    return analysis


def _val_predictions(trainer, analysis) -> tuple | None:
    if analysis is None or analysis.calibrate != "temperature":
        return None
    val = trainer.evaluate("val")
    return val["labels"], val["probs"]


def run_train(args) -> None:
    trainer, encoder = _build(args, train=True)
    from ..report import provenance, write_report
    from ..tasks.multimodal.report import RANDOM_ENCODERS, MultimodalRun

    analysis = args.analysis
    fit = trainer.fit(resume=args.resume)
    if "stopped_after_epoch" in fit:
        print(f"stopped after epoch {fit['stopped_after_epoch']}; continue with {_flag(args, 'resume')}")
        return
    test = trainer.test()
    run = MultimodalRun(trainer, test, fit_result=fit, reference=getattr(args, "reference", False),
                        val=_val_predictions(trainer, analysis))
    write_report(run, args.output_dir, provenance(encoder, data_files(args.data_path), seed=args.seed),
                 getattr(encoder, "random_init", False), analysis, warning=RANDOM_ENCODERS)
    _random_weights_note(encoder)
    _print_metrics(test["metrics"])
    print(f"wrote {args.output_dir}")


def _random_weights_note(encoder) -> None:
    if getattr(encoder, "random_init", False):
        print(RANDOM_WEIGHTS)


def results_name_for_test(out_dir) -> str:
    """results.json, or results_test.json where results.json holds a training run's record (kept as it is)."""
    import json

    path = Path(out_dir) / "results.json"
    if not path.is_file():
        return "results.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return "results_test.json"  # not ours to overwrite
    trained = isinstance(previous, dict) and "best_epoch" in previous
    return "results_test.json" if trained else "results.json"


def run_test(args) -> None:
    trainer, encoder = _build(args, train=False)
    from ..report import provenance, write_report
    from ..tasks.multimodal.report import RANDOM_ENCODERS, MultimodalRun

    analysis = args.analysis
    path = args.model_path or find_best_checkpoint(args.output_dir)
    print(f"checkpoint: {path}")
    test = trainer.test(path)
    prov = provenance(encoder, data_files(args.data_path), seed=args.seed, inputs=[path])
    name = results_name_for_test(args.output_dir)
    # the val split is scored only for a full report's temperature scaling
    run = MultimodalRun(trainer, test, reference=getattr(args, "reference", False),
                        val=_val_predictions(trainer, analysis) if args.full_report else None)
    if args.full_report:
        write_report(run, args.output_dir, prov, getattr(encoder, "random_init", False), analysis,
                     warning=RANDOM_ENCODERS, filename=name)
    else:
        run.write_predictions(args.output_dir)
    _random_weights_note(encoder)
    _print_metrics(test["metrics"])
    out = Path(args.output_dir)
    print(f"wrote {out / 'detailed_predictions.csv'}" + (f" and {out / name}" if args.full_report else ""))


def register(sub, add_model_args=add_model_args) -> None:
    p = sub.add_parser("multimodal", help="multimodal finetuning (clinical + dermoscopic images + metadata)",
                       allow_abbrev=False)
    msub = p.add_subparsers(dest="multimodal_cmd", required=True)
    for mode in ("train", "test"):
        q = msub.add_parser(mode, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            help="train + test PanDermTFormer" if mode == "train" else "test a saved checkpoint",
                            allow_abbrev=False)
        add_model_args(q)
        add_recipe_args(q, ref=False)
        q.add_argument("--bgr", action="store_true", help="feed BGR channels, as the reference's cv2 loading did")
        add_analysis_args(q, calibrate=True)
        if mode == "train":
            add_train_args(q, ref=False)
            q.set_defaults(func=_with_flags(run_train, q),
                           precheck=_with_flags(lambda args: _check_early(args, True), q), door_flags=FLAGS)
        else:
            q.add_argument("--model-path", dest="model_path", default=None,
                           help="default: the best checkpoint in --output-dir; the report goes to "
                                "results_test.json where --output-dir holds the training run's results.json")
            # The CLI writes the whole report by default; the door writes only the predictions, as the reference.
            q.add_argument("--predictions-only", dest="full_report", action="store_false",
                           help="write only detailed_predictions.csv (the reference test.py's output)")
            q.set_defaults(func=_with_flags(run_test, q),
                           precheck=_with_flags(lambda args: _check_early(args, False), q), door_flags=FLAGS)
