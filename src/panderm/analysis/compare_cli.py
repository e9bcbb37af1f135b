"""`panderm compare RUN_DIR... --out DIR`: leaderboard and paired significance tests over run folders."""
from __future__ import annotations

import argparse


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
    from .compare import DEFAULT_METRICS, LP_SETTINGS

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
    from .compare import compare_runs

    result = compare_runs(args.run_dirs, args.out, metrics=args.metrics, n_resamples=args.bootstrap, seed=args.seed,
                          lp_settings=args.lp_settings)
    print_result(result)


def register(sub, add_model_args) -> None:
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
