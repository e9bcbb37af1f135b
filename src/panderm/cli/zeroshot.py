"""`panderm zeroshot`: zero-shot classification on the named benchmarks or any CSV."""
from __future__ import annotations

import argparse

from ..analysis.attach import check_group_columns, summary_lines
from .args import (
    add_allow_absolute_paths, add_analysis_args, add_decode_arg, add_model_args, settings_from_args)
from .common import encoder_and_run_dir, print_results
from .doors import precheck


def _zeroshot(args) -> None:
    from ..data.benchmarks import get_benchmark, load_classnames
    from ..data.templates import SKIN_TEMPLATES, load_templates
    from ..errors import PandermError
    from ..report import format_table, provenance, write_report
    from ..tasks import zeroshot

    if not args.benchmark and not args.csv:
        raise PandermError("give --benchmark NAME [NAME ...] and/or --csv FILE --classnames ...")
    templates = load_templates(args.templates) if args.templates else SKIN_TEMPLATES
    datasets = []
    # One --benchmark with --csv and no --classnames: that CSV is the benchmark's test set (its class list).
    bench_csv = args.csv if args.csv and not args.classnames and len(args.benchmark or []) == 1 else None
    for name in args.benchmark or []:
        bench = get_benchmark(name)
        csv = bench_csv or bench.csv_path(args.data_root)
        root = args.root or (None if bench_csv else args.data_root)
        datasets.append(zeroshot.build_dataset(csv, benchmark=bench, image_col=args.image_col, label_col=args.label_col,
                                               root=root, allow_outside_root=args.allow_outside_root,
                                               split=args.split, warn_unsplit="--split NAME"))
    if args.csv and not bench_csv:
        if not args.classnames:
            raise PandermError("--csv needs --classnames FILE or 'a,b,c'")
        datasets.append(zeroshot.build_dataset(args.csv, load_classnames(args.classnames), image_col=args.image_col,
                                               label_col=args.label_col, root=args.root,
                                               allow_outside_root=args.allow_outside_root, split=args.split,
                                               warn_unsplit="--split NAME"))
    analysis = settings_from_args(args, n_resamples=args.bootstrap, seed=args.seed)
    for d in datasets:
        check_group_columns(list(d.table.frame.columns), analysis, d.table.csv_path)
    encoder, out = encoder_and_run_dir(args)
    results = zeroshot.run(encoder, datasets, templates, batch_size=args.batch_size, num_workers=args.workers,
                           precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
                           n_bootstrap=args.bootstrap, seed=args.seed)
    summary = write_report(results, out, provenance(encoder, [d.table.csv_path for d in datasets], seed=args.seed),
                           encoder.random_init, analysis=analysis)
    many = len(summary["datasets"]) > 1
    notes = [line for name, entry in summary["datasets"].items()
             for line in summary_lines(entry, f"{name}: " if many else "")]
    print_results(encoder, format_table(results.rows()), out, notes)


def register(sub, add_model_args=add_model_args) -> None:
    p = sub.add_parser("zeroshot", help="zero-shot classification on benchmarks or any CSV",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    add_decode_arg(p)
    p.add_argument("--benchmark", nargs="+", default=None,
                   help="PAD-6 HAM-7 SNU-134 SD-128 Daffodil-5 PH2-2 ISIC2020-2 DermNet-23 (their default CSVs)")
    p.add_argument("--data-root", default=".",
                   help="folder holding data/zero-shot-classification/ for --benchmark; their image paths are relative"
                        " to it")
    p.add_argument("--csv", default=None,
                   help="a custom CSV (image path + label columns); with one --benchmark and no --classnames: your "
                        "copy of that benchmark's test CSV")
    p.add_argument("--classnames", default=None, help="class names for --csv: a file (txt or CSV) or 'a,b,c'")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--label-col", default="label", help="integer labels 0..K-1 or class-name strings")
    p.add_argument("--root", default=None,
                   help="folder image paths are relative to (default: the CSV's folder; '.' for --benchmark)")
    add_allow_absolute_paths(p)
    p.add_argument("--split", default=None, metavar="NAME",
                   help="score only the rows whose 'split' column equals NAME (e.g. test); default: every row, "
                        "with a warning when the CSV has a split column")
    p.add_argument("--templates", default=None, help="prompt templates file, one per line with {c}")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: off)")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed")
    p.add_argument("--out", default="runs/zeroshot", help="run folder (results.json, predictions, plots)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_analysis_args(p)
    p.set_defaults(func=_zeroshot, precheck=precheck())
