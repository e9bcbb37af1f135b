"""`panderm audit`: duplicates, near-duplicates and group leakage in a dataset CSV, and a leakage-free re-split."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Audit a dataset CSV: byte-identical files (sha256), near-duplicates (a flip-robust perceptual hash; with "
    "--model also embedding cosine, through the feature cache), duplicate pairs and group ids (--group-col) found "
    "in more than one split, class balance per split, image size / mode / format statistics and unreadable files. "
    "Writes audit.md, audit.html (thumbnails of the worst pairs inlined), audit.json, duplicates.csv and "
    "leakage.csv under --out. Findings are results: the exit status is 0 whatever is found.")


def _none_if_empty(value: str) -> str | None:
    return value.strip() or None


def _threshold(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 143:
        raise argparse.ArgumentTypeError(f"must be a whole number of bits in 0..143, got {value!r}")
    return n


def _cosine(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not -1.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity in [-1, 1], got {value!r}")
    return x


def _audit(args) -> None:
    from ..cli_support import resolve_device
    from ..data.images import image_pixel_limit
    from ..errors import DataError
    from ..report import format_table, prepare_run_dir, write_csv
    from .audit import audit_dataset, fix_splits, remaining_leaks
    from .audit_report import summary_rows, write_reports

    if args.fix_splits:
        if not args.split_col:
            raise DataError("--fix-splits needs the split column (--split-col) to take split names and shares from")
        if Path(args.fix_splits).resolve() == Path(args.csv).resolve():
            raise DataError(f"--fix-splits {args.fix_splits} would overwrite the audited --csv; write it elsewhere")
    hints = {args.image_col: "--image-col", **{c: "--group-col" for c in args.group_col}}
    for col, flag in ((args.label_col, "--label-col"), (args.split_col, "--split-col")):
        if col:
            hints[col] = flag
    options = {}
    if args.model:
        options = {"checkpoint": args.checkpoint, "device": resolve_device(args.device), "batch_size": args.batch_size,
                   "num_workers": args.workers, "precision": args.precision, "cache": not args.no_cache,
                   "cache_dir": args.cache_dir, "allow_random_init": args.allow_random_init}
    with image_pixel_limit(args.max_image_pixels):
        result = audit_dataset(args.csv, image_col=args.image_col, label_col=args.label_col, split_col=args.split_col,
                               group_cols=args.group_col, root=args.root, phash_threshold=args.phash_threshold,
                               embed_threshold=args.embed_threshold, model=args.model, model_options=options,
                               flag_hints=hints)
        prepare_run_dir(args.out, overwrite=args.overwrite)
        write_reports(result, args.out, top_pairs=args.top_pairs)
    print(format_table(summary_rows(result)))
    if args.fix_splits:
        fixed = fix_splits(result.frame, split_col=args.split_col, label_col=args.label_col,
                           group_cols=args.group_col, pairs=result.pair_positions(), seed=args.seed)
        write_csv(args.fix_splits, fixed)
        left = remaining_leaks(result, fixed)
        print(f"wrote {args.fix_splits}: {left['cross_split_pairs']} duplicate pair(s) and {left['group_leaks']} "
              f"group id(s) across splits remain (seed {args.seed})")
        root = Path(result.columns["root"]).resolve()
        if Path(args.fix_splits).resolve().parent != root:
            print(f"its image paths are relative to {root}: use it with --root {root}")
    print(f"wrote {Path(args.out) / 'audit.md'}, audit.html, audit.json, duplicates.csv and leakage.csv")


def register(sub, add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
    from ..cli_support import add_max_image_pixels, precheck
    from .audit_hash import DEFAULT_PHASH_THRESHOLD

    p = sub.add_parser("audit", help="find duplicates, near-duplicates and patient/lesion leakage across splits",
                       description=DESCRIPTION, allow_abbrev=False)
    p.add_argument("--csv", required=True, help="required: the dataset CSV (one row per image)")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--label-col", type=_none_if_empty, default="label",
                   help="CSV column holding the class (for class balance and the stratified re-split; '' for none)")
    p.add_argument("--split-col", type=_none_if_empty, default="split",
                   help="CSV column holding train / val / test ('' for none: the whole CSV is one split)")
    p.add_argument("--group-col", nargs="+", default=[], metavar="COL",
                   help="columns whose ids must stay in one split, e.g. patient_id lesion_id")
    p.add_argument("--phash-threshold", type=_threshold, default=DEFAULT_PHASH_THRESHOLD,
                   help=f"largest perceptual-hash distance (bits of 143, mirror-robust) called a near-duplicate "
                        f"(default {DEFAULT_PHASH_THRESHOLD}: resized and re-encoded copies fall within it)")
    p.add_argument("--embed-threshold", type=_cosine, default=0.95,
                   help="with --model: smallest embedding cosine similarity called a near-duplicate")
    add_model_args(p, required=False)
    p.add_argument("--fix-splits", default=None, metavar="OUT.csv",
                   help="also write the CSV re-split so that no duplicate pair or group id spans splits, stratified "
                        "by class, keeping each split's share of rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-split (--fix-splits)")
    p.add_argument("--top-pairs", type=int, default=12, help="pairs shown with thumbnails in audit.html, worst first")
    p.add_argument("--out", required=True, help="required: output folder for the report files")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    add_max_image_pixels(p)
    p.set_defaults(func=_audit, precheck=precheck(),
                   door_flags={"image_root": "--root"})
