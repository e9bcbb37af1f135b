"""Subcommands contributed by the task modules. Each handler only maps flags to library calls."""
from __future__ import annotations

import argparse

from ..analysis.attach import check_group_columns, summary_lines
from ..analysis.cli_args import add_analysis_args, settings_from_args
from ..cli_support import add_allow_absolute_paths, add_decode_arg, precheck


def _encoder_and_run_dir(args, preprocess=None):
    """Load the model (after the data was validated), then claim the run folder."""
    from ..cli_support import resolve_device
    from ..models import load_encoder
    from ..report import prepare_run_dir

    encoder = load_encoder(args.model, checkpoint=args.checkpoint, device=resolve_device(args.device),
                           allow_random_init=args.allow_random_init, preprocess=preprocess)
    # the reference's own transform (--reference-preprocess) comes with the reference's full decoding
    encoder.set_draft_decode(not args.full_decode and not getattr(args, "reference_preprocess", False))
    return encoder, prepare_run_dir(args.out, args.overwrite)


def _print_results(encoder, table: str, out, notes=()) -> None:
    if encoder.random_init:
        print("RANDOM WEIGHTS: these numbers come from an untrained model")
    print(table)
    for line in notes:
        print(line)
    print(f"wrote {out / 'results.json'}")


def _zeroshot(args) -> None:
    from ..data.benchmarks import get_benchmark, load_classnames
    from ..data.templates import SKIN_TEMPLATES, load_templates
    from ..errors import PandermError
    from ..report import format_table, provenance
    from . import zeroshot

    if not args.benchmark and not args.csv:
        raise PandermError("give --benchmark NAME [NAME ...] and/or --csv FILE --classnames ...")
    templates = load_templates(args.templates) if args.templates else SKIN_TEMPLATES
    hints = {args.image_col: "--image-col", args.label_col: "--label-col"}
    datasets = []
    # One --benchmark with --csv and no --classnames: that CSV is the benchmark's test set (its class list).
    bench_csv = args.csv if args.csv and not args.classnames and len(args.benchmark or []) == 1 else None
    for name in args.benchmark or []:
        bench = get_benchmark(name)
        csv = bench_csv or bench.csv_path(args.data_root)
        root = args.root or (None if bench_csv else args.data_root)
        datasets.append(zeroshot.build_dataset(csv, benchmark=bench, image_col=args.image_col, label_col=args.label_col,
                                               root=root, flag_hints=hints, allow_outside_root=args.allow_outside_root,
                                               split=args.split, warn_unsplit=True))
    if args.csv and not bench_csv:
        if not args.classnames:
            raise PandermError("--csv needs --classnames FILE or 'a,b,c'")
        datasets.append(zeroshot.build_dataset(args.csv, load_classnames(args.classnames), image_col=args.image_col,
                                               label_col=args.label_col, root=args.root, flag_hints=hints,
                                               allow_outside_root=args.allow_outside_root, split=args.split,
                                               warn_unsplit=True))
    analysis = settings_from_args(args, n_resamples=args.bootstrap, seed=args.seed)
    for d in datasets:
        check_group_columns(list(d.table.frame.columns), analysis, d.table.csv_path)
    encoder, out = _encoder_and_run_dir(args)
    results = zeroshot.run(encoder, datasets, templates, batch_size=args.batch_size, num_workers=args.workers,
                           precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
                           n_bootstrap=args.bootstrap, seed=args.seed)
    summary = zeroshot.write_report(results, out, provenance(encoder, [d.table.csv_path for d in datasets],
                                                             seed=args.seed), encoder.random_init, analysis=analysis)
    many = len(summary["datasets"]) > 1
    notes = [line for name, entry in summary["datasets"].items()
             for line in summary_lines(entry, f"{name}: " if many else "")]
    _print_results(encoder, format_table(zeroshot.results_table(results)), out, notes)


def _retrieval(args) -> None:
    from ..report import format_table, provenance
    from . import retrieval_run
    from .retrieval_data import load_pairs

    pairs = load_pairs(args.csv, args.image_col, args.caption_col, root=args.root, group_by=args.group_by,
                       allow_outside_root=args.allow_outside_root)
    encoder, out = _encoder_and_run_dir(args)
    result, ci, img, txt = retrieval_run.evaluate(
        encoder, pairs, group_mode=args.duplicates, n_bootstrap=args.bootstrap, seed=args.seed,
        batch_size=args.batch_size, num_workers=args.workers, precision=args.precision, cache=not args.no_cache,
        cache_dir=args.cache_dir)
    retrieval_run.write_report(pairs, result, ci, img, txt, out,
                               provenance(encoder, [args.csv], seed=args.seed, extra={"duplicates": args.duplicates}),
                               encoder.random_init)
    _print_results(encoder, format_table(retrieval_run.results_rows(result, ci)), out)


def _linear_probe(args) -> None:
    from ..models import REFERENCE_LP_PREPROCESS
    from ..report import format_table, provenance
    from . import linear_probe_run as lp
    from ..data.benchmarks import load_classnames
    from .linear_probe import solver_tol

    classnames = load_classnames(args.classnames) if args.classnames else None
    splits = lp.load_splits(args.csv, args.image_col, args.label_col, args.split_col, root=args.root,
                            classnames=classnames, allow_outside_root=args.allow_outside_root)
    analysis = settings_from_args(args, n_resamples=args.bootstrap)
    check_group_columns(list(splits.tables["test"].frame.columns), analysis, args.csv)
    if analysis.calibrate == "temperature" and "val" not in splits.tables:
        from ..errors import DataError

        raise DataError(f"{args.csv}: --calibrate temperature fits on the val split, and the CSV has no val rows")
    encoder, out = _encoder_and_run_dir(args, REFERENCE_LP_PREPROCESS if args.reference_preprocess else None)
    kind, norm = lp.reference_feature(encoder) if args.kind == "auto" else (args.kind, args.normalize)
    seeds = list(range(args.seeds))
    result = lp.run(encoder, splits, kind, norm, percent_data=args.percent_data, seeds=seeds, shots=args.shots,
                    tune_c=args.tune_c, C=args.C, n_bootstrap=args.bootstrap, device="cpu",
                    tol=solver_tol(args.solver),
                    extract_kw=dict(batch_size=args.batch_size, num_workers=args.workers, precision=args.precision,
                                    cache=not args.no_cache, cache_dir=args.cache_dir))
    summary = lp.write_report(result, splits, out, provenance(encoder, [args.csv], seed=seeds,
                                                              extra={"kind": kind, "normalized": norm,
                                                                     "solver": args.solver}), encoder.random_init,
                              analysis=analysis)
    print(f"features: {kind}{' (L2-normalised)' if norm else ''}, {result['n_features']}-d; K={result['n_classes']}")
    # the analyses of the run with the most training data and the first seed (every run's are in results.json)
    main_run = max(summary["runs"], key=lambda r: (r["percent"] if r.get("shots") is None else -1, -r["seed"]))
    label = f"percent {main_run['percent']:g}" if main_run.get("shots") is None else f"{main_run['shots']} shots"
    notes = summary_lines(main_run, f"{label}, seed {main_run['seed']}: ") if len(summary["runs"]) > 1 \
        else summary_lines(main_run)
    _print_results(encoder, format_table(lp.summary_rows(result)), out, notes)


def register(sub, add_model_args) -> None:
    p = sub.add_parser("linear-probe", help="logistic-regression probe on frozen features, few-shot fractions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    add_decode_arg(p)
    p.add_argument("--csv", required=True, help="CSV with image, label and split (train/val/test) columns")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--label-col", default="label",
                   help="integer labels 0..K-1 or class-name strings (with --classnames)")
    p.add_argument("--classnames", default=None,
                   help="class names in label order: a file (txt or CSV) or 'a,b,c'; maps text labels to indices "
                        "and names the classes in the outputs")
    p.add_argument("--split-col", default="split", help="CSV column holding train / val / test")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    add_allow_absolute_paths(p)
    p.add_argument("--percent-data", type=float, nargs="+", default=[1.0], help="training fractions")
    p.add_argument("--shots", type=int, nargs="+", default=None, help="K-shot per class instead of fractions")
    p.add_argument("--seeds", type=int, default=1, help="repeat subsampling with seeds 0..N-1 (seed 0 = reference)")
    p.add_argument("--tune-c", action="store_true", help="choose C on the val split (default: C = D*K/100)")
    p.add_argument("--C", type=float, default=None, help="fixed inverse regularisation strength")
    p.add_argument("--solver", default="fast", choices=["fast", "reference"],
                   help="fast (default): the reference's L-BFGS on the same objective, stopped at max|grad| <= 1e-5; "
                        "reference: its stopping rule too (float32 stagnation; the linear_eval.py door's choice)")
    p.add_argument("--kind", default="auto", choices=["auto", "embed", "features"],
                   help="auto: the feature the reference used for this model family")
    p.add_argument("--normalize", action="store_true", help="L2-normalise features (with --kind embed/features)")
    p.add_argument("--reference-preprocess", action="store_true",
                   help="the reference's Resize 256 bilinear / crop 224 / ImageNet std 0.228 instead of the model's own")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0: off)")
    p.add_argument("--out", default="runs/linear_probe", help="run folder (results.json, predictions, plots)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    add_analysis_args(p, calibrate=True)
    p.set_defaults(func=_linear_probe, precheck=precheck())

    p = sub.add_parser("retrieval", help="zero-shot image-text retrieval on a CSV of pairs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    add_decode_arg(p)
    p.add_argument("--csv", required=True, help="one row per (image, caption) pair")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--caption-col", default="caption", help="CSV column holding the captions")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    add_allow_absolute_paths(p)
    p.add_argument("--group-by", default=None, help="column naming the image: its captions all count as hits")
    p.add_argument("--duplicates", default="auto", choices=["auto", "none"],
                   help="auto: identical image paths / captions are one item (hits, not competitors); "
                        "none: every row is its own item, duplicates compete (the reference)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: off)")
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap resampling")
    p.add_argument("--out", default="runs/retrieval", help="run folder (results.json, ranks.csv, examples.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_retrieval, precheck=precheck())

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
    from .concepts.cli import register as register_concepts

    register_concepts(sub, add_model_args)
    from .finetune_cli import register as register_finetune

    register_finetune(sub, add_model_args)
