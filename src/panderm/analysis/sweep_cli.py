"""`panderm sweep`: run a model × task × dataset grid, each cell its own run folder, then `panderm compare`."""
from __future__ import annotations


def _config(args) -> dict:
    """The config file's keys, updated with every flag given on the command line."""
    from .sweep import load_config

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
    from .compare_cli import print_result
    from .sweep import plan_from_config, run_sweep

    config = _config(args)
    if not config.get("out"):
        raise PandermError("give --out DIR (or 'out' in the --config file): the sweep's folder")
    if not config.get("models"):
        raise PandermError("give --models A B ... (or 'models' in the --config file)")
    plan = plan_from_config(config)
    result = run_sweep(plan, config["out"], compare=not args.no_compare)
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


def register(sub, add_model_args) -> None:
    """Add the subcommand to `sub` (argparse sub-parsers)."""
    from .compare import LP_SETTINGS
    from .compare_cli import _bootstrap_count
    from .sweep import TASKS

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
