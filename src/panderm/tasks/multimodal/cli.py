"""`panderm multimodal train|test` and the reference doors' flag set (docs/REFERENCE.md).

Wire into the CLI with ``multimodal.cli.register(sub, add_model_args)``. The doors
`multimodal_finetune/train.py|test.py` use `reference_parser` / `run_reference`: the
reference's flag names and, by default, its computation (BGR input, std 0.228, cv2-style
resizing, fp32, drop path as the reference per model, `--dataset_name` default Derm7pt);
`panderm multimodal` defaults to RGB, std 0.229, antialiased resizing and `--precision amp`,
with a flag back to each reference behaviour.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

_RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "results.json", "results_test.json", "detailed_predictions.csv",
              "evaluation_metrics.csv", "confusion_matrix.png", "reliability.png", "subgroups.csv", "subgroups.png")
_MODEL_ALIASES = {"PanDerm-v2": "PanDerm2"}
DATASETS = ("derm7pt", "milk11", "pad", "csv")
REFERENCE_DATASET = "derm7pt"  # the reference's --dataset_name default, "Derm7pt"
PRECISIONS = ("fp32", "amp", "amp_bf16", "bf16", "fp16")
RESIZE_MODES = ("reference", "antialias")  # data.RESIZE_MODES, kept here so the CLI starts without torch
# the reference's dataset folders, relative to multimodal_finetune/ (where its scripts run)
REFERENCE_DATA_DIRS = {"derm7pt": "../data/multimodal_finetune/derm7pt/",
                       "milk11": "../data/multimodal_finetune/MILK-11/",
                       "pad": "../data/multimodal_finetune/PAD/"}


def str2bool(value) -> bool:
    """`--cuda`, `--cuda true|false|1|0|yes|no`: a real boolean (the reference's `type=bool` made "False" True)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def dataset_choice(value: str) -> str:
    """Our dataset key for the reference's `--dataset_name` spellings ('Derm7pt', 'MILK-11', 'PAD')."""
    key = str(value).strip().lower()
    if key in DATASETS:
        return key
    from ...errors import PandermError
    from .prompts import canonical_name

    try:
        key = canonical_name(value)
    except PandermError:
        return value  # argparse's choices check names the valid values
    return "pad" if key == "pad-ufes-20" else key


def find_best_checkpoint(folder) -> Path:
    """`best.pt` in `folder`, else the reference's `best{acc|valloss|f1|auroc}_model_{epoch}.pth` (latest epoch)."""
    import re

    from ...errors import PandermError

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
                           "train first or give --model_path")
    return max(found)[2]


def _none_or(value):
    """A column flag's value; '' / 'none' mean no such column."""
    return None if value is None or str(value).strip().lower() in ("", "none") else value


CSV_COLUMNS = {"clinical_col": "clinical_path", "derm_col": "derm_path", "label_col": "label", "split_col": "split",
               "prompt_col": None, "meta_cols": None}


def _load_table(dataset: str, path: str, allow_outside_root: bool = False, args=None):
    """The dataset's table; `args` gives the generic CSV loader's column flags (--dataset csv)."""
    from ...errors import DataError, PandermError
    from .data import load_derm7pt, load_milk11, load_multimodal_csv, load_pad_ufes20

    cols = {k: getattr(args, k, v) for k, v in CSV_COLUMNS.items()} if args is not None else dict(CSV_COLUMNS)
    if dataset != "csv":
        given = [k for k, v in cols.items() if v != CSV_COLUMNS[k]]
        if given:
            raise PandermError(f"{', '.join('--' + k for k in given)} appl{'ies' if len(given) == 1 else 'y'} to "
                               f"--dataset csv only (--dataset {dataset} has fixed columns)")
        loaders = {"derm7pt": load_derm7pt, "milk11": load_milk11, "pad": load_pad_ufes20}
        try:
            return loaders[dataset](path, allow_outside_root=allow_outside_root)
        except DataError as exc:
            where = Path(path)
            if (where.is_dir() and not (where / "meta").is_dir()) or (dataset != "pad" and where.is_file()):
                exc.args = (f"{exc}; --dataset {dataset} reads the dataset's meta/ folder layout: for one CSV of "
                            "your own use --dataset csv --data_path FILE.csv (columns clinical_path, derm_path, "
                            "label, split; other names with --clinical_col, --derm_col, --label_col, --split_col)",)
            raise
    meta_cols = [c.strip() for c in str(cols["meta_cols"]).split(",") if c.strip()] if cols["meta_cols"] else []
    return load_multimodal_csv(path, clinical_col=_none_or(cols["clinical_col"]), derm_col=_none_or(cols["derm_col"]),
                               label_col=cols["label_col"], split_col=cols["split_col"], meta_columns=meta_cols,
                               prompt_col=_none_or(cols["prompt_col"]), allow_outside_root=allow_outside_root,
                               num_classes=getattr(args, "class_num", None))  # K = max label + 1 without it


def _add_recipe(p, ref: bool) -> None:
    """Flags shared by both doors; `ref` picks the reference's underscore spellings."""
    n = (lambda s: f"--{s}") if ref else (lambda s: "--" + s.replace("_", "-"))
    if ref:
        p.add_argument("--dataset", "--dataset_name", dest="dataset", type=dataset_choice, default=REFERENCE_DATASET,
                       choices=DATASETS, help="derm7pt | milk11 | pad | csv; the reference's Derm7pt / MILK-11 / PAD "
                                              "spellings are accepted (default Derm7pt, as the reference)")
    else:
        p.add_argument(n("dataset"), default="pad", choices=DATASETS,
                       help="data loader: pad, derm7pt, milk11 (their meta/ layouts) or csv (one CSV per case)")
    if ref:
        p.add_argument("--data_dir", "--data_path", "--dir_release", dest="data_path", default=None,
                       help="dataset root (derm7pt / milk11 / pad meta layout) or one CSV; default the "
                            "reference's ../data/multimodal_finetune/<derm7pt|MILK-11|PAD>/")
    else:
        p.add_argument("--data-path", "--data-dir", dest="data_path", required=True,
                       help="dataset folder (derm7pt / milk11 / pad meta layout) or one CSV")
    g = p.add_argument_group("--dataset csv columns", "the generic CSV loader: one row per case, image paths "
                             "relative to the CSV's folder, labels 0..K-1, split train/val/test")
    g.add_argument(n("clinical_col"), dest="clinical_col", default=CSV_COLUMNS["clinical_col"],
                   help="clinical image path column ('none': only dermoscopic images, used in both slots)")
    g.add_argument(n("derm_col"), dest="derm_col", default=CSV_COLUMNS["derm_col"],
                   help="dermoscopic image path column ('none': only clinical images, used in both slots)")
    g.add_argument(n("label_col"), dest="label_col", default=CSV_COLUMNS["label_col"], help="integer label column")
    g.add_argument(n("split_col"), dest="split_col", default=CSV_COLUMNS["split_col"],
                   help="split column: train / val (valid, validation) / test")
    g.add_argument(n("prompt_col"), dest="prompt_col", default=None,
                   help="column with the metadata sentence for " + n("use_meta") + " " + n("use_text_encoder"))
    g.add_argument(n("meta_cols"), dest="meta_cols", default=None,
                   help="comma-separated metadata columns, one-hot encoded for " + n("use_meta") + " without "
                        + n("use_text_encoder"))
    from ...cli_support import add_allow_absolute_paths

    add_allow_absolute_paths(p)
    p.add_argument(n("class_num"), dest="class_num", type=int, default=None,
                   help="number of classes (checked against the data)")
    uses = {"use_cli": "use the clinical image", "use_derm": "use the dermoscopic image",
            "use_meta": "use the patient metadata (sentences with " + n("use_text_encoder") + ", else one-hot "
                        + n("meta_cols") + ")",
            "use_text_encoder": "encode the metadata sentences with the model's text tower",
            "use_visual_embedding_layer": "add the reference's visual embedding layer before fusion"}
    for flag, text in uses.items():
        p.add_argument(n(flag), dest=flag, action="store_true", help=text)
    p.add_argument(n("hidden_dim"), dest="hidden_dim", type=int, default=None,
                   help="accepted for compatibility: the width is the encoder's (a different value is reported)")
    p.add_argument(n("meta_dim"), dest="meta_dim", type=int, default=128, help="width of the metadata embedding")
    p.add_argument(n("num_head"), dest="num_head", type=int, default=8,
                   help="attention heads of the image fusion transformer")
    p.add_argument(n("att_depth"), dest="att_depth", type=int, default=4, help="layers of the image fusion transformer")
    p.add_argument(n("meta_num_head"), dest="meta_num_head", type=int, default=8,
                   help="attention heads of the metadata fusion")
    p.add_argument(n("meta_att_depth"), dest="meta_att_depth", type=int, default=2,
                   help="layers of the metadata fusion")
    p.add_argument(n("fusion"), default="concatenate", help="'cross attention' or concatenate")
    p.add_argument(n("meta_fusion_mode"), dest="meta_fusion_mode", default="concatenate",
                   help="how metadata joins the images: concatenate or 'cross attention'")
    p.add_argument(n("encoder_pool"), dest="encoder_pool", default="auto",
                   help="auto (the reference's per model: CLS of LN(tokens) for PanDerm-2-style CAE towers, "
                        "LN(mean(LN(tokens))) for PanDerm v1, else features), cls, features; the reference's "
                        "mean/cls both mean auto")
    p.add_argument("--out" if ref else "--head", dest="head", default="linear", choices=["linear", "mlp"],
                   help="classification head: linear or mlp")
    p.add_argument(n("freeze_encoders"), dest="freeze_encoders", action="store_true",
                   help="train fusion + head only, on cached encoder features (not in the reference)")
    p.add_argument(n("paired_augmentation_off"), dest="unpaired", action="store_true",
                   help="independent augmentation per image (the reference shares one draw)")
    if ref:
        p.add_argument("--reference_std", dest="reference_std", action="store_true", default=True,
                       help="ImageNet std (0.228, 0.224, 0.225) as the reference (default)")
        p.add_argument("--imagenet_std", dest="reference_std", action="store_false",
                       help="the correct ImageNet std 0.229 instead of the reference's 0.228")
        p.add_argument("--resize_mode", dest="resize_mode", default="reference", choices=RESIZE_MODES,
                       help="reference (default): cv2-style bilinear without antialiasing, 224 first, then 256 "
                            "for the train crop; antialias: one antialiased resize")
        p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="fp32 (default, as the reference); amp = fp16 autocast + GradScaler on CUDA")
    else:
        p.add_argument("--reference-std", dest="reference_std", action="store_true",
                       help="ImageNet std 0.228 (the reference's typo) instead of 0.229")
        p.add_argument("--resize-mode", dest="resize_mode", default="antialias", choices=RESIZE_MODES,
                       help="antialias: one antialiased resize; reference: the reference's cv2-style chain")
    p.add_argument(n("drop_path"), dest="drop_path", type=float, default=None,
                   help="stochastic depth of the CAE towers, linear 0 -> rate over the blocks, training only "
                        "(default: the reference's, 0.1 for PanDerm-2-style CLIP models, 0 for PanDerm v1)")
    p.add_argument(n("image_size"), dest="image_size", type=int, default=None,
                   help="input size in px (default: the model's own)")
    if ref:  # `panderm` gets --batch-size / --workers from add_model_args
        p.add_argument("--batch_size", dest="batch_size", type=int, default=64, help="cases per batch")
        p.add_argument("--num_workers", dest="workers", type=int, default=0, help="DataLoader workers")
    p.add_argument(n("seed"), type=int, default=122, help="random seed")
    p.add_argument(n("bootstrap"), type=int, default=1000, help="bootstrap resamples for test CIs (0: off)")
    p.add_argument(n("output_dir"), *(() if ref else ("--out",)), dest="output_dir", default="./result",
                   help="run folder (checkpoints, predictions, results)")
    p.add_argument("--debug", action="store_true", help="keep tracebacks")


def _add_train(p, ref: bool) -> None:
    n = (lambda s: f"--{s}") if ref else (lambda s: "--" + s.replace("_", "-"))
    p.add_argument(n("epochs"), type=int, default=50, help="training epochs")
    p.add_argument(n("accum_freq"), dest="accum_freq", type=int, default=1,
                   help="batches accumulated per optimiser step")
    p.add_argument(n("learning_rate"), n("lr"), dest="learning_rate", type=float, default=1e-4, help="learning rate")
    p.add_argument(n("weight_decay"), dest="weight_decay", type=float, default=1e-4, help="weight decay")
    p.add_argument(n("adamw"), action="store_true", help="decoupled AdamW (the reference: Adam + L2)")
    p.add_argument(n("monitor"), default="acc", choices=["acc", "loss", "f1", "auroc"],
                   help="validation quantity that picks the best checkpoint")
    p.add_argument(n("patience"), type=int, default=100, help="epochs without improvement before stopping")
    p.add_argument(n("weight_sampler"), *(() if ref else ("--weighted-sampler",)), dest="weight_sampler",
                   action="store_true", help="class-balanced sampling of the training set")
    p.add_argument(n("resume"), action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument(n("overwrite"), action="store_true", help="replace an existing run folder")
    p.add_argument(n("max_steps"), dest="max_steps", type=int, default=None, help="optimiser steps per epoch cap")
    p.add_argument(n("stop_after_epoch"), dest="stop_after_epoch", type=int, default=None,
                   help="stop after this epoch (the run can be continued with resume; default: run all epochs)")
    p.add_argument(n("wandb"), action="store_true", help="log to wandb (off by default)")


# messages name the reference door's spellings; `spell_flags` puts them in the caller's
_FLAG_SYNONYMS = {"--out": ("--output_dir", "--output-dir"), "--data_dir": ("--data-path",),
                  "--pretrain_path": ("--checkpoint",), "--cuda": ("--device",), "--num_workers": ("--workers",),
                  "--dataset_name": ("--dataset",), "--head": ("--out",)}


def spell_flags(message: str, options) -> str:
    """`message` with each `--flag` in the spelling the parser with `options` has.

    `--class_num` becomes `--class-num` for `panderm multimodal`, `--allow-random-init` becomes
    `--allow_random_init` for the doors; `--out` always means the output folder here (the door's
    `--out` is the head). Flags the parser lacks in every spelling are left as they are.
    """
    import re

    options = set(options)

    def one(m):
        flag = m.group(0)
        candidates = [flag, *_FLAG_SYNONYMS.get(flag, ()), flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")]
        if flag == "--out":  # the output folder (prepare_run_dir's message), never the door's head flag
            candidates = [c for c in candidates if c != "--out"]
        return next((c for c in candidates if c in options), flag)

    return re.sub(r"(?<![\w/.-])--[a-z][a-z0-9_-]*[a-z0-9]", one, message)


def _speaking(fn, options):
    """`fn(args)` whose PandermError messages name this parser's flag spellings."""
    from ...errors import PandermError

    def run(args):
        try:
            return fn(args)
        except PandermError as exc:
            if len(exc.args) == 1 and isinstance(exc.args[0], str):
                exc.args = (spell_flags(exc.args[0], options),)
            raise

    run.__name__ = getattr(fn, "__name__", "run")
    return run


def _options(parser) -> frozenset:
    return frozenset(s for a in parser._actions for s in a.option_strings)


def _check_early(args, train: bool) -> None:
    """A missing data path or an output folder holding a run: one line before torch is imported."""
    from ...cli_support import check_inputs

    again = getattr(args, "overwrite", False) or getattr(args, "resume", False)
    check_inputs([(args.data_path, "--data_path")], (args.output_dir, "--output_dir") if train else None,
                 overwrite=again)


def _build(args, train: bool):
    from ...cli_support import resolve_device
    from ...errors import PandermError

    if not args.data_path:
        if args.dataset not in REFERENCE_DATA_DIRS:
            raise PandermError(f"give the dataset root with --data_dir (no default for --dataset {args.dataset})")
        args.data_path = REFERENCE_DATA_DIRS[args.dataset]
    _check_early(args, train)
    from ...models import load_encoder
    from .model import FusionConfig
    from .train import MultimodalTrainer, TrainConfig

    table = _load_table(args.dataset, args.data_path, getattr(args, "allow_outside_root", False), args)
    if args.class_num is not None and args.class_num != table.num_classes:
        raise PandermError(f"--class_num {args.class_num} but {args.data_path} has {table.num_classes} classes")
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
        from ...report import lock_run_dir, prepare_run_dir

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
            logging.getLogger(__name__).warning("--cuda: no CUDA GPU is available; running on CPU")
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
    from ...analysis.attach import check_group_columns
    from ...analysis.cli_args import settings_from_args
    from ...errors import DataError

    analysis = settings_from_args(args, n_resamples=args.bootstrap, seed=42)
    if analysis.group_cols:
        check_group_columns(list(table.meta.columns), analysis, args.data_path)
    if analysis.calibrate == "temperature" and not table.split_counts().get("val"):
        raise DataError(f"{args.data_path}: --calibrate temperature fits on the val split, and the data has no val rows")
    return analysis


def _val_predictions(trainer, analysis) -> tuple | None:
    if analysis is None or analysis.calibrate != "temperature":
        return None
    val = trainer.evaluate("val")
    return val["labels"], val["probs"]


def run_train(args) -> None:
    trainer, encoder = _build(args, train=True)
    from ...report import provenance
    from .train import write_test_outputs

    analysis = args.analysis
    fit = trainer.fit(resume=args.resume)
    if "stopped_after_epoch" in fit:
        print(f"stopped after epoch {fit['stopped_after_epoch']}; continue with --resume")
        return
    test = trainer.test()
    write_test_outputs(trainer, test, args.output_dir, provenance(encoder, data_files(args.data_path), seed=args.seed),
                       fit_result=fit, reference=getattr(args, "reference", False), analysis=analysis,
                       val=_val_predictions(trainer, analysis))
    _random_weights_note(encoder)
    _print_metrics(test["metrics"])
    print(f"wrote {args.output_dir}")


def _random_weights_note(encoder) -> None:
    if getattr(encoder, "random_init", False):
        print("RANDOM WEIGHTS: these numbers come from an untrained model")


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
    from ...report import provenance
    from .train import write_test_outputs

    analysis = args.analysis
    path = args.model_path or find_best_checkpoint(args.output_dir)
    print(f"checkpoint: {path}")
    test = trainer.test(path)
    prov = provenance(encoder, data_files(args.data_path), seed=args.seed, inputs=[path])
    name = results_name_for_test(args.output_dir)
    write_test_outputs(trainer, test, args.output_dir, prov, predictions_only=not args.full_report,
                       results_name=name, reference=getattr(args, "reference", False), analysis=analysis,
                       val=_val_predictions(trainer, analysis))
    _random_weights_note(encoder)
    _print_metrics(test["metrics"])
    out = Path(args.output_dir)
    print(f"wrote {out / 'detailed_predictions.csv'}" + (f" and {out / name}" if args.full_report else ""))


def _add_ref_model(p) -> None:
    p.add_argument("--model_name", dest="model", default="PanDerm-v2",
                   help="PanDerm-v2 (= PanDerm2), PanDerm-Large / PanDerm-Base (PanDerm v1, with --pretrain_path) "
                        "or any panderm model id (local-dir:, hf-hub:, timm:, ...)")
    p.add_argument("--checkpoint", "--pretrain_path", dest="checkpoint", default=None,
                   help="encoder weights file (the reference's --pretrain_path, e.g. the PanDerm v1 .pth)")
    p.add_argument("--pretrained", default=None, help="accepted as in the reference, which never reads it")
    p.add_argument("--fold", type=int, default=0, help="accepted as in the reference, which never reads it")
    p.add_argument("--allow_random_init", dest="allow_random_init", action="store_true",
                   help="evaluate random weights when none are found")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--cuda", type=str2bool, nargs="?", const=True, default=None,
                   help="--cuda / --cuda true: use the GPU (CPU with a warning if none); --cuda false: CPU. "
                        "Overrides --device")


def reference_parser(mode: str) -> argparse.ArgumentParser:
    """The doors' parser: the reference's flags; BGR input and paired augmentation on."""
    p = argparse.ArgumentParser(prog=f"multimodal_finetune/{mode}.py",
                                description=f"PanDerm-2 multimodal finetune ({mode}), reference flags",
                                allow_abbrev=False)
    _add_ref_model(p)
    _add_recipe(p, ref=True)
    p.add_argument("--rgb", dest="bgr", action="store_false", help="feed RGB (the reference fed cv2 BGR)")
    p.set_defaults(bgr=True, reference=True)  # the reference's file layout and metric names
    if mode == "train":
        _add_train(p, ref=True)
    else:
        p.add_argument("--model_path", default=None,
                       help="best.pt (or a reference state_dict .pth); default: the best checkpoint in "
                            "--output_dir (best.pt, else the newest best*_model_<epoch>.pth)")
        p.add_argument("--full_report", action="store_true",
                       help="also write evaluation_metrics.csv, confusion_matrix.png and results.json "
                            "(results_test.json where --output_dir holds the training run's results.json)")
        # the reference's test.py takes --epochs (its scripts pass it) and never reads it
        p.add_argument("--epochs", type=int, default=None,
                       help="accepted as in the reference (its scripts pass it); not used by test")
    from ...cli_support import finish_help

    return finish_help(p)


def run_reference(mode: str, argv=None) -> int:
    from ...cli_support import run_door, setup_logging

    parser = reference_parser(mode)
    args = parser.parse_args(argv)
    setup_logging()
    run = _speaking(run_train if mode == "train" else run_test, _options(parser))
    return run_door(lambda: run(args), f"multimodal_finetune/{mode}.py", debug=args.debug)


def register(sub, add_model_args) -> None:
    p = sub.add_parser("multimodal", help="multimodal finetuning (clinical + dermoscopic images + metadata)",
                       allow_abbrev=False)
    msub = p.add_subparsers(dest="multimodal_cmd", required=True)
    for mode in ("train", "test"):
        q = msub.add_parser(mode, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            help="train + test PanDermTFormer" if mode == "train" else "test a saved checkpoint",
                            allow_abbrev=False)
        add_model_args(q)
        _add_recipe(q, ref=False)
        q.add_argument("--bgr", action="store_true", help="feed BGR channels, as the reference's cv2 loading did")
        from ...analysis.cli_args import add_analysis_args

        add_analysis_args(q, calibrate=True)
        if mode == "train":
            _add_train(q, ref=False)
            q.set_defaults(func=_speaking(run_train, _options(q)),
                           precheck=_speaking(lambda args: _check_early(args, True), _options(q)))
        else:
            q.add_argument("--model-path", dest="model_path", default=None,
                           help="default: the best checkpoint in --output-dir; the report goes to "
                                "results_test.json where --output-dir holds the training run's results.json")
            # The CLI writes the whole report by default; the door writes only the predictions, as the reference.
            q.add_argument("--predictions-only", dest="full_report", action="store_false",
                           help="write only detailed_predictions.csv (the reference test.py's output)")
            q.set_defaults(func=_speaking(run_test, _options(q)),
                           precheck=_speaking(lambda args: _check_early(args, False), _options(q)))
