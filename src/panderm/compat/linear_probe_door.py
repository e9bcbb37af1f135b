"""The linear-probe door's flag dialect (linear_probe/linear_eval.py): the reference's flags and output files.

By default it reproduces the reference (docs/REFERENCE.md): the reference feature of each model family,
Resize 256 (bilinear) → CenterCrop 224 → ImageNet mean with std (0.228, 0.224, 0.225), C = D·K/100, L-BFGS,
seed 0, one-vs-one AUROC.
"""
from __future__ import annotations

import argparse
import os

from ..cli.args import add_allow_absolute_paths
from ..cli.doors import check_inputs, door_main, finish_help, resolve_device
from ..report import RANDOM_WEIGHTS
from . import add_reference_device_arg

#: The door's `{param: flag}` map: an error's `param` is named by this door's flag.
FLAGS = {"image_root": "--root_path", "model_preprocess": "add --model_preprocess", "image_col": "--image_key",
         "label_col": "the reference reads the column 'label'", "split_col": "the reference reads the column 'split'",
         "classnames": "the reference takes integer labels"}


def _mark_random_weights(summary_csv: str) -> None:
    """Append a `warning` column to the summary CSV (the reference columns stay first and unchanged)."""
    import pandas as pd

    from ..report import write_csv

    frame = pd.read_csv(summary_csv, dtype=str, keep_default_na=False)
    frame["warning"] = RANDOM_WEIGHTS
    write_csv(summary_csv, frame)


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--csv_path", required=True, help="required: CSV with image, label and split columns")
    p.add_argument("--csv_filename", default="results.csv", help="summary CSV: Dataset, W_F1, AUROC, BACC, ACC, AUPR")
    p.add_argument("--image_key", default="filename", help="CSV column holding the image paths")
    p.add_argument("--root_path", default=None,
                   help="folder the image paths are relative to (default: the working directory)")
    p.add_argument("--model", required=True,
                   help="e.g. open_clip_hf-hub:redlessone/PanDerm2, PanDerm, biomedclip, MONET")
    p.add_argument("--percent_data", type=float, default=1.0, help="fraction of the training rows used (stratified)")
    p.add_argument("--batch_size", type=int, default=200, help="images per batch")
    p.add_argument("--num_workers", type=int, default=8, help="DataLoader workers")
    p.add_argument("--output_dir", default="./output_dir",
                   help="output folder (predictions, confusion matrix, --csv_filename)")
    p.add_argument("--checkpoint", default=None, help="weights file for --model (default: the model's own)")
    add_reference_device_arg(p)
    p.add_argument("--model_preprocess", action="store_true",
                   help="use the model's own preprocessing instead (needed by models whose input size is not "
                        "224 px, e.g. demo)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_allow_absolute_paths(p)
    return finish_help(p)


def run(args) -> None:
    """Extract the reference feature, fit the probe, write the reference's output files."""
    check_inputs([(args.csv_path, "--csv_path")])  # a missing CSV: one line before torch is imported
    from ..models import REFERENCE_LP_PREPROCESS, load_encoder
    from ..report import format_table
    from ..tasks.linear_probe import pipeline as lp

    splits = lp.load_splits(args.csv_path, args.image_key, "label", root=args.root_path or ".",
                            allow_outside_root=args.allow_outside_root)
    device = resolve_device(args.device)
    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=device,
                           preprocess=None if args.model_preprocess else REFERENCE_LP_PREPROCESS)
    kind, norm = lp.reference_feature(encoder)
    result = lp.run(encoder, splits, kind, norm, percent_data=(args.percent_data,), n_bootstrap=0,
                    device=device, extract_kw=dict(batch_size=args.batch_size, num_workers=args.num_workers,
                                                   precision=lp.reference_precision(encoder)))
    out = lp.reference_output_dir(args.output_dir)
    lp.write_reference_outputs(result, out, args.csv_filename)
    if encoder.random_init:
        _mark_random_weights(os.path.join(out, os.path.basename(args.csv_filename)))
        print(RANDOM_WEIGHTS)
    print(format_table(result.rows()))
    print(f"wrote {out}")


def main(argv=None, description: str = "") -> int:
    return door_main(build_parser(description), run, "linear_eval.py", FLAGS, argv)
