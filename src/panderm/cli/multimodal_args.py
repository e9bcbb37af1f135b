"""The flags of `panderm multimodal train|test` and of the reference doors multimodal_finetune/train.py|test.py:
one recipe, two spellings (`ref=True`: the reference's underscore flags and defaults, docs/REFERENCE.md)."""
from __future__ import annotations

import argparse

from .args import add_allow_absolute_paths

_MODEL_ALIASES = {"PanDerm-v2": "PanDerm2"}
DATASETS = ("derm7pt", "milk11", "pad", "csv")
REFERENCE_DATASET = "derm7pt"  # the reference's --dataset_name default, "Derm7pt"
PRECISIONS = ("fp32", "amp", "amp_bf16", "bf16", "fp16")
RESIZE_MODES = ("reference", "antialias")  # data.RESIZE_MODES, kept here so the CLI starts without torch
# the reference's dataset folders, relative to multimodal_finetune/ (where its scripts run)
REFERENCE_DATA_DIRS = {"derm7pt": "../data/multimodal_finetune/derm7pt/",
                       "milk11": "../data/multimodal_finetune/MILK-11/",
                       "pad": "../data/multimodal_finetune/PAD/"}


CSV_COLUMNS = {"clinical_col": "clinical_path", "derm_col": "derm_path", "label_col": "label", "split_col": "split",
               "prompt_col": None, "meta_cols": None}


#: the multimodal settings an error can name (`PandermError.param`); each dialect spells their flags its own way
PARAMS = ("class_num", "att_depth", "num_head", "meta_att_depth", "meta_num_head", "meta_dim",
          "drop_path", "monitor", "epochs", "batch_size", "accum_freq", "learning_rate", "weight_decay")


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
    from ..errors import PandermError
    from ..tasks.multimodal.prompts import canonical_name

    try:
        key = canonical_name(value)
    except PandermError:
        return value  # argparse's choices check names the valid values
    return "pad" if key == "pad-ufes-20" else key


def add_recipe_args(p, ref: bool) -> None:
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


def add_train_args(p, ref: bool) -> None:
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
