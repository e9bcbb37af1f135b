"""`panderm retrieval`: zero-shot image-text retrieval on a CSV of (image, caption) pairs."""
from __future__ import annotations

import argparse

from .args import add_allow_absolute_paths, add_decode_arg, add_model_args
from .common import encoder_and_run_dir, print_results
from .doors import precheck


def _retrieval(args) -> None:
    from ..report import format_table, provenance, write_report
    from ..tasks.retrieval import pipeline as retrieval_run
    from ..tasks.retrieval.data import load_pairs

    pairs = load_pairs(args.csv, args.image_col, args.caption_col, root=args.root, group_by=args.group_by,
                       allow_outside_root=args.allow_outside_root)
    encoder, out = encoder_and_run_dir(args)
    run = retrieval_run.evaluate(
        encoder, pairs, group_mode=args.duplicates, n_bootstrap=args.bootstrap, seed=args.seed,
        batch_size=args.batch_size, num_workers=args.workers, precision=args.precision, cache=not args.no_cache,
        cache_dir=args.cache_dir)
    write_report(run, out, provenance(encoder, [args.csv], seed=args.seed, extra={"duplicates": args.duplicates}),
                 encoder.random_init)
    print_results(encoder, format_table(run.rows()), out)


def register(sub, add_model_args=add_model_args) -> None:
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
