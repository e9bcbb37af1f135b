"""The analysis subcommands: `panderm compare` (leaderboard and paired significance tests over run folders),
`panderm sweep` (a model × task × dataset grid, each cell its own run folder, then compare) and `panderm audit`
(duplicates, near-duplicates and group leakage in a dataset CSV, and a leakage-free re-split)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .args import add_max_image_pixels, add_model_args
from .doors import precheck, resolve_device


def _bootstrap_count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value!r}")
    return n


def add_compare_args(p, prefix: str = "") -> None:
    """The comparison settings (shared by `compare` and `sweep`)."""
    from ..metrics import METRIC_NAMES
    from ..analysis.compare import DEFAULT_METRICS, LP_SETTINGS

    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="NAME",
                   help="metrics of the leaderboard and the paired tests; the first ranks the models. Names: "
                        + ", ".join(METRIC_NAMES) + " (or top<k>_accuracy)")
    p.add_argument("--lp-settings", choices=LP_SETTINGS, default="primary",
                   help="primary: compare each linear-probe run at its largest training setting and lowest seed; "
                        "all: every setting and seed two runs share, each its own benchmark")


def print_result(result) -> None:
    """The ranking, then the first metric per benchmark (rows) and model (columns); CIs are in the files."""
    from ..report import format_table

    primary = result.metrics[0]
    print(format_table([{"rank": e["rank"], "model": e["model"], "mean rank": e["mean_rank"],
                         "benchmarks": e["n_benchmarks"]} for e in result.leaderboard], floatfmt=".2f"))
    rows = []
    for bench in result.benchmarks:
        row = {"benchmark": bench}
        for entry in result.leaderboard:
            cell = entry["cells"].get(f"{bench} {primary}")
            row[entry["model"]] = "–" if cell is None else f"{cell['value']:.4f}"
        rows.append(row)
    print(f"\n{primary} (95% CIs and the other metrics in leaderboard.md):")
    print(format_table(rows))
    for note in result.notes:
        print(note)
    if result.pairwise:
        print(f"paired tests: {len(result.pairwise)} (model pair × benchmark × metric), "
              f"{result.n_significant()} with Holm-adjusted p < 0.05; see pairwise.csv")
    print(f"wrote {result.out_dir / 'leaderboard.md'}, leaderboard.csv, leaderboard.html, pairwise.csv, "
          f"results.json and plots/")


def _compare(args) -> None:
    from ..analysis.compare import compare_runs

    result = compare_runs(args.run_dirs, args.out, metrics=args.metrics, n_resamples=args.bootstrap, seed=args.seed,
                          lp_settings=args.lp_settings)
    print_result(result)


def register_compare(sub, add_model_args=add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
    p = sub.add_parser(
        "compare", help="leaderboard and paired significance tests (bootstrap, DeLong, Holm) over run folders",
        description="Read panderm run folders (zeroshot, linear-probe, finetune, multimodal), score every model "
                    "on every benchmark with 95% bootstrap CIs, and test every pair of models evaluated on the "
                    "same images: paired bootstrap of the metric difference (same resampled images for both), "
                    "DeLong for AUROC, Holm across benchmarks. Writes leaderboard.md/.csv/.html, pairwise.csv, "
                    "results.json and plots/ under --out. Two runs of one benchmark on different images are "
                    "refused. See docs/ANALYSIS.md.", allow_abbrev=False)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders (each with a results.json), or folders holding run folders (e.g. a sweep's "
                        "--out)")
    p.add_argument("--out", default="runs/compare", help="folder for the leaderboard, pairwise.csv and plots")
    add_compare_args(p)
    p.add_argument("--bootstrap", type=_bootstrap_count, default=1000, metavar="N",
                   help="bootstrap resamples for the CIs and the paired tests (0: point values and DeLong only)")
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap resampling (the same for every model)")
    p.set_defaults(func=_compare)


def _config(args) -> dict:
    """The config file's keys, updated with every flag given on the command line."""
    from .sweep_run import load_config

    config = load_config(args.config) if args.config else {}
    given = {
        "models": args.models, "tasks": args.tasks, "benchmarks": args.benchmarks, "data_root": args.data_root,
        "csv": args.csv, "classnames": args.classnames, "root": args.root, "device": args.device,
        "batch_size": args.batch_size, "cache_dir": args.cache_dir, "bootstrap": args.bootstrap, "seed": args.seed,
        "metrics": args.metrics, "lp_settings": args.lp_settings, "out": args.out,
    }
    for key, value in given.items():
        if value is not None:
            config[key] = value
    task_args = {"zeroshot": args.zeroshot_args, "linear-probe": args.linear_probe_args,
                 "finetune": args.finetune_args}
    if any(v is not None for v in task_args.values()):
        merged = config.get("args") or {}
        merged = {"all": merged} if isinstance(merged, (list, str)) else dict(merged)
        for task, value in task_args.items():
            if value is not None:
                merged[task] = value
        config["args"] = merged
    return config


def _sweep(args) -> None:
    from ..errors import PandermError
    from ..report import format_table
    from .sweep_run import plan_from_config, run_sweep

    config = _config(args)
    if not config.get("out"):
        raise PandermError("give --out DIR (or 'out' in the --config file): the sweep's folder")
    if not config.get("models"):
        raise PandermError("give --models A B ... (or 'models' in the --config file)")
    plan = plan_from_config(config)
    result = run_sweep(plan, config["out"], command=args.cli_main, parser=args.cli_parser,
                       compare=not args.no_compare)
    print(format_table(result.rows(), floatfmt=".1f"))
    if result.compare is not None:
        print()
        print_result(result.compare)
    if result.errors:
        failed = [c for c in result.cells if str(c.run_dir) in result.errors]
        for c in failed:
            print(f"FAILED {c.label}: {result.errors[str(c.run_dir)]}")
        raise PandermError(f"{len(failed)} of {len(result.cells)} cells failed (listed above); the others finished"
                           + (" and the leaderboard covers them" if result.compare or result.compare_skipped else "")
                           + "; rerun the same command to retry only the failed cells")


def register_sweep(sub, add_model_args=add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
    from ..analysis.compare import LP_SETTINGS
    from .sweep_run import TASKS

    p = sub.add_parser(
        "sweep", help="run a model × task × dataset grid (each cell its own run folder), then compare the models",
        description="Run every model on every task and dataset, each cell an ordinary panderm run in "
                    "OUT/<model>/<task>/<dataset>; a failed cell is reported and the others go on; a rerun skips "
                    "the finished cells (results.json recording the same command). Then writes the leaderboard and "
                    "paired tests of `panderm compare` under OUT/compare. Flags given here override the --config "
                    "file's keys. See docs/ANALYSIS.md.", allow_abbrev=False)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="sweep config, JSON or YAML (.yaml/.yml), with the keys of these flags plus per-task "
                        "datasets and flags (docs/ANALYSIS.md)")
    p.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="model ids as for --model of the tasks (aliases, hf-hub:ORG/NAME, local-dir:PATH, demo)")
    p.add_argument("--tasks", nargs="+", default=None, choices=TASKS, metavar="TASK",
                   help=f"tasks to run: {', '.join(TASKS)} (if neither here nor in --config: zeroshot)")
    p.add_argument("--benchmarks", nargs="+", default=None, metavar="NAME[=CSV]",
                   help="zero-shot benchmarks (PAD-6 HAM-7 ...): NAME reads its default CSV under --data-root, "
                        "NAME=CSV your copy of its test CSV (image paths relative to --data-root)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder the --benchmarks CSVs and images are found under (when not given: .)")
    p.add_argument("--csv", nargs="+", default=None, metavar="[NAME=]FILE",
                   help="CSVs with a train/val/test split column: the linear-probe and finetune datasets (NAME: "
                        "its folder and leaderboard name; when not given, the file's stem); with --classnames also "
                        "zero-shot on their test split")
    p.add_argument("--classnames", default=None, metavar="SPEC",
                   help="class names of the --csv datasets in label order (a file or 'a,b,c')")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="folder the --csv image paths are relative to (when not given: each CSV's folder)")
    p.add_argument("--zeroshot-args", default=None, metavar="'FLAGS'",
                   help="extra flags for every zeroshot cell, one string written with '=' (e.g. --zeroshot-args='--templates t.txt')")
    p.add_argument("--linear-probe-args", default=None, metavar="'FLAGS'",
                   help="extra flags for every linear-probe cell, one string written with '=' (e.g. "
                        "--linear-probe-args='--percent-data 0.1 0.5 1.0 --seeds 3')")
    p.add_argument("--finetune-args", default=None, metavar="'FLAGS'",
                   help="extra flags for every finetune cell, one string written with '=' (e.g. --finetune-args='--epochs 10')")
    p.add_argument("--device", default=None,
                   help="device of every cell: auto, cpu, cuda or cuda:N (when not given: the tasks' auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per batch in every cell (when not given: the tasks' own)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature cache of every cell (when not given: $PANDERM_CACHE/features); features are "
                        "keyed by model and images, so cells and reruns reuse them")
    p.add_argument("--bootstrap", type=_bootstrap_count, default=None, metavar="N",
                   help="bootstrap resamples of every cell's CIs and of the comparison (when not given: 1000)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the comparison's bootstrap (when not given: 42)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="leaderboard metrics, the first ranks the models (when not given: balanced_accuracy auroc "
                        "accuracy)")
    p.add_argument("--lp-settings", choices=LP_SETTINGS, default=None,
                   help="which linear-probe settings the comparison tests: primary (largest setting, lowest seed; "
                        "when not given) or all")
    p.add_argument("--no-compare", action="store_true", help="run the cells only; no leaderboard")
    p.add_argument("--out", default=None, metavar="DIR", help="required (here or in --config): the sweep's folder")
    p.set_defaults(func=_sweep)


AUDIT_DESCRIPTION = (
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
    from ..data.images import image_pixel_limit
    from ..errors import DataError
    from ..report import format_table, prepare_run_dir, write_csv
    from ..analysis.audit import audit_dataset, fix_splits, remaining_leaks
    from ..analysis.audit_report import summary_rows, write_reports

    if args.fix_splits:
        if not args.split_col:
            raise DataError("--fix-splits needs the split column (--split-col) to take split names and shares from")
        if Path(args.fix_splits).resolve() == Path(args.csv).resolve():
            raise DataError(f"--fix-splits {args.fix_splits} would overwrite the audited --csv; write it elsewhere")
    options = {}
    if args.model:
        options = {"checkpoint": args.checkpoint, "device": resolve_device(args.device), "batch_size": args.batch_size,
                   "num_workers": args.workers, "precision": args.precision, "cache": not args.no_cache,
                   "cache_dir": args.cache_dir, "allow_random_init": args.allow_random_init}
    with image_pixel_limit(args.max_image_pixels):
        result = audit_dataset(args.csv, image_col=args.image_col, label_col=args.label_col, split_col=args.split_col,
                               group_cols=args.group_col, root=args.root, phash_threshold=args.phash_threshold,
                               embed_threshold=args.embed_threshold, model=args.model, model_options=options)
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


def register_audit(sub, add_model_args=add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
    from ..analysis.audit_hash import DEFAULT_PHASH_THRESHOLD

    p = sub.add_parser("audit", help="find duplicates, near-duplicates and patient/lesion leakage across splits",
                       description=AUDIT_DESCRIPTION, allow_abbrev=False)
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
