"""`panderm linear-probe`: a logistic-regression probe on frozen features (fractions or K shots)."""
from __future__ import annotations

import argparse

from ..analysis.attach import check_group_columns, summary_lines
from .args import (
    add_analysis_args, add_decode_arg, add_model_args, add_split_table_args, settings_from_args)
from .common import encoder_and_run_dir, print_results
from .doors import precheck

#: this subcommand's hints for an error's `param` (beside panderm's own map)
FLAGS = {"model_preprocess": "drop --reference-preprocess", "classnames": "--classnames FILE or 'a,b,c', in label order"}


def _linear_probe(args) -> None:
    from ..models import REFERENCE_LP_PREPROCESS
    from ..report import format_table, provenance, write_report
    from ..tasks.linear_probe import pipeline as lp
    from ..data.benchmarks import load_classnames
    from ..tasks.linear_probe import solver_tol

    classnames = load_classnames(args.classnames) if args.classnames else None
    splits = lp.load_splits(args.csv, args.image_col, args.label_col, args.split_col, root=args.root,
                            classnames=classnames, allow_outside_root=args.allow_outside_root)
    analysis = settings_from_args(args, n_resamples=args.bootstrap)
    check_group_columns(list(splits.tables["test"].frame.columns), analysis, args.csv)
    if analysis.calibrate == "temperature" and "val" not in splits.tables:
        from ..errors import DataError

        raise DataError(f"{args.csv}: --calibrate temperature fits on the val split, and the CSV has no val rows")
    encoder, out = encoder_and_run_dir(args, REFERENCE_LP_PREPROCESS if args.reference_preprocess else None)
    kind, norm = lp.reference_feature(encoder) if args.kind == "auto" else (args.kind, args.normalize)
    seeds = list(range(args.seeds))
    result = lp.run(encoder, splits, kind, norm, percent_data=args.percent_data, seeds=seeds, shots=args.shots,
                    tune_c=args.tune_c, C=args.C, n_bootstrap=args.bootstrap, device="cpu",
                    tol=solver_tol(args.solver),
                    extract_kw=dict(batch_size=args.batch_size, num_workers=args.workers, precision=args.precision,
                                    cache=not args.no_cache, cache_dir=args.cache_dir))
    summary = write_report(result, out, provenance(encoder, [args.csv], seed=seeds,
                                                   extra={"kind": kind, "normalized": norm, "solver": args.solver}),
                           encoder.random_init, analysis=analysis)
    print(f"features: {kind}{' (L2-normalised)' if norm else ''}, {summary['n_features']}-d; K={summary['n_classes']}")
    # the analyses of the run with the most training data and the first seed (every run's are in results.json)
    main_run = max(summary["runs"], key=lambda r: (r["percent"] if r.get("shots") is None else -1, -r["seed"]))
    label = f"percent {main_run['percent']:g}" if main_run.get("shots") is None else f"{main_run['shots']} shots"
    notes = summary_lines(main_run, f"{label}, seed {main_run['seed']}: ") if len(summary["runs"]) > 1 \
        else summary_lines(main_run)
    print_results(encoder, format_table(result.rows()), out, notes)


def register(sub, add_model_args=add_model_args) -> None:
    p = sub.add_parser("linear-probe", help="logistic-regression probe on frozen features, few-shot fractions",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    add_model_args(p)
    add_decode_arg(p)
    add_split_table_args(p)
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
    p.set_defaults(func=_linear_probe, precheck=precheck(), door_flags=FLAGS)
