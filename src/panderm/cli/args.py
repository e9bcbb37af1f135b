"""Flag groups shared by the `panderm` subcommands (and, where the spelling is the same, by the reference doors).

Each adder writes one group of flags with its help text in one place, so the same flag reads the same in every
subcommand's `--help`.
"""
from __future__ import annotations

import argparse
import math

from ..analysis.attach import CALIBRATE, AnalysisSettings

_ROOT_HELP = "folder image paths are relative to (default: the CSV's folder)"
DEVICE_HELP = ("auto (default: CUDA when present, else CPU), cpu, cuda or cuda:N; a named device that is not there "
               "is an error")


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The model flags; `--model` is required (`required=False` where only some settings load a model)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, default=None,
                   help=("required: " if required else "") +
                        "alias (PanDerm2, DermLIP-B16, ...; see `panderm models`), hf-hub:ORG/NAME, "
                        "local-dir:PATH, timm:NAME, ... (demo: a tiny random-weight model, for trying the commands)")
    g.add_argument("--checkpoint", "--pretrained", dest="checkpoint", default=None,
                   help="weights file (or open_clip pretrained tag) for the model")
    g.add_argument("--allow-random-init", action="store_true", help="evaluate random weights when none are found")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.add_argument("--batch-size", type=int, default=64, help="images per batch")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: sized from the CPU count)")
    g.add_argument("--precision", default="amp", choices=["amp", "amp_bf16", "bf16", "fp16", "fp32"],
                   help="autocast on CUDA (ignored on CPU)")
    g.add_argument("--no-cache", action="store_true", help="always re-encode images")
    g.add_argument("--cache-dir", default=None, help="feature cache folder (default $PANDERM_CACHE/features)")


def add_table_args(p, csv_help: str) -> None:
    """`--csv` (required) and `--image-col`: the table of images an evaluating subcommand reads."""
    p.add_argument("--csv", required=True, help=csv_help)
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")


def add_split_table_args(p) -> None:
    """The table of a trained task (linear probe, finetune): `--csv` with labels and a train/val/test split."""
    add_table_args(p, "CSV with image, label and split (train/val/test) columns")
    p.add_argument("--label-col", default="label",
                   help="integer labels 0..K-1 or class-name strings (with --classnames)")
    p.add_argument("--classnames", default=None,
                   help="class names in label order: a file (txt or CSV) or 'a,b,c'; maps text labels to indices "
                        "and names the classes in the outputs")
    p.add_argument("--split-col", default="split", help="CSV column holding train / val / test")
    add_root_args(p)


def add_root_args(p, root_help: str = _ROOT_HELP) -> None:
    """`--root` and the accepted-and-ignored `--allow-absolute-paths`."""
    p.add_argument("--root", default=None, help=root_help)
    add_allow_absolute_paths(p)


def add_run_dir_args(p, default: str, help: str) -> None:
    """`--out RUN_DIR` and `--overwrite`: the run folder a subcommand claims (a folder holding a run is refused)."""
    p.add_argument("--out", default=default, help=help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def add_allow_absolute_paths(p) -> None:
    """`--allow-absolute-paths` (both spellings): accepted and ignored, so existing command lines keep working."""
    p.add_argument("--allow-absolute-paths", "--allow_absolute_paths", dest="allow_outside_root", action="store_true",
                   help="no effect, kept so existing command lines work: absolute and '../' image paths in a CSV "
                        "are always accepted (relative ones resolve against the image root)")


def batch_size(value: str):
    """`--batch-size N` or `--batch-size auto`."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}")
    return n


def _pixel_count(value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels >= 0 (0: no limit), got {value!r}")
    return int(number)


def add_max_image_pixels(p) -> None:
    """`--max-image-pixels N` (both spellings): the largest width x height opened (the decompression-bomb guard)."""
    p.add_argument("--max-image-pixels", "--max_image_pixels", dest="max_image_pixels", type=_pixel_count, default=None,
                   metavar="N", help="open images of up to N pixels (width x height), for real gigapixel images; "
                                     "default: PIL's decompression-bomb limit of 178956970 (also settable as "
                                     "PANDERM_MAX_IMAGE_PIXELS, read by every door); 0: no limit")


def add_decode_arg(p) -> None:
    """`--full-decode` of the subcommands that extract features (JPEGs are decoded at a reduced scale otherwise)."""
    p.add_argument("--full-decode", action="store_true",
                   help="decode JPEGs at full size, as the reference does (otherwise at the smallest DCT scale whose "
                        "short side is still at least twice the model input: several times faster on large "
                        "photos; the mode is part of the cache key and of results.json)")


def add_analysis_args(p, calibrate: bool = False) -> None:
    """The analysis flags of an evaluating subcommand (`calibrate`: it has a validation split to fit on)."""
    g = p.add_argument_group("analysis (docs/ANALYSIS.md)")
    g.add_argument("--group-col", nargs="+", default=[], metavar="COL",
                   help="CSV column(s) to report per-group metrics for (e.g. fitspatrick gender); "
                        "writes subgroups.csv and subgroups.png")
    g.add_argument("--bins", nargs="+", default=[], metavar="COL=E0,E1,...",
                   help="bin a numeric group column at these edges, left-closed (e.g. age=0,40,60,120)")
    g.add_argument("--min-group", type=int, default=30, metavar="N",
                   help="groups with fewer images are reported but flagged and left out of the worst group")
    g.add_argument("--calibration-bins", type=int, default=15, metavar="N",
                   help="confidence bins of the expected calibration error and the reliability diagram")
    if calibrate:
        g.add_argument("--calibrate", choices=CALIBRATE, default="none",
                       help="temperature: fit a temperature on the validation split and report calibration "
                            "before and after")


def settings_from_args(args, n_resamples: int | None = None, seed: int | None = None) -> AnalysisSettings:
    from ..analysis.subgroups import parse_bins

    kwargs = {}
    if n_resamples:  # 0 bootstrap resamples for the task means no CIs there; the subgroup CIs keep the default
        kwargs["n_resamples"] = n_resamples
    if seed is not None:
        kwargs["seed"] = seed
    return AnalysisSettings(group_cols=tuple(args.group_col or ()), bins=parse_bins(args.bins or []),
                            min_group=args.min_group, n_bins=args.calibration_bins,
                            calibrate=getattr(args, "calibrate", "none"), **kwargs)
