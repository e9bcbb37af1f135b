"""The `panderm` command: one subcommand per task.

The CLI does the right thing by default (the model's own preprocessing, RGB
images, seeded classifiers); reference behaviour is behind flags and in the
reference-compatible doors (src/main.py, linear_probe/, ...).
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .cli_support import resolve_device, run_door, setup_logging


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="demo",
                   help="alias (PanDerm2, DermLIP-B16, ...), hf-hub:ORG/NAME, local-dir:PATH, timm:NAME, ... "
                        "(default: demo, a tiny random-weight model)")
    g.add_argument("--checkpoint", "--pretrained", dest="checkpoint", default=None,
                   help="weights file (or open_clip pretrained tag) for the model")
    g.add_argument("--allow-random-init", action="store_true", help="evaluate random weights when none are found")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: sized from the CPU count)")
    g.add_argument("--precision", default="amp", choices=["amp", "amp_bf16", "bf16", "fp16", "fp32"],
                   help="autocast on CUDA (ignored on CPU)")
    g.add_argument("--no-cache", action="store_true", help="always re-encode images")
    g.add_argument("--cache-dir", default=None, help="feature cache folder (default $PANDERM_CACHE/features)")


def _features(args) -> None:
    from .report import format_table
    from .tasks.export import export_features

    meta = export_features(
        args.model, args.csv, args.image_col, args.out, root=args.root, kind=args.kind, normalize=args.normalize,
        checkpoint=args.checkpoint, device=resolve_device(args.device), batch_size=args.batch_size,
        num_workers=args.workers, precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
        allow_random_init=args.allow_random_init, flag_hints={args.image_col: "--image-col"},
    )
    if meta.get("rank") == "worker":
        return
    source = "cache" if meta["from_cache"] else "encoded"
    print(format_table([{"model": meta["model"]["model_id"], "kind": meta["kind"], "N": meta["n"], "D": meta["d"],
                         "source": source, "seconds": meta["seconds"]}]))
    if meta["from_cache"]:
        print(f"features served from cache (key {meta['cache_key']})")
    if meta.get("warning"):
        print(meta["warning"])
    print(f"wrote {args.out}")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args.model, args.out, device=resolve_device(args.device), checkpoint=args.checkpoint,
             tasks=DEMO_TASKS)


DEMO_TASKS = ("features", "zeroshot", "retrieval_run", "linear_probe_run")


def _models(args) -> None:
    from .models.registry import ALIASES

    width = max(map(len, ALIASES))
    for name, alias in ALIASES.items():
        target = alias.model_id + (f" (pretrained {alias.pretrained})" if alias.pretrained else "")
        print(f"{name.ljust(width)}  {target}  {alias.note}".rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panderm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"panderm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="extract image embeddings to a .npy file")
    add_model_args(p)
    p.add_argument("--csv", required=True)
    p.add_argument("--image-col", default="image_path")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--kind", default="embed", choices=["embed", "features", "tokens"],
                   help="embed: projected joint space; features: pooled pre-projection; tokens: the CLS token row")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each row")
    p.add_argument("--out", required=True, help="output .npy (a .json sidecar is written next to it)")
    p.set_defaults(func=_features)

    p = sub.add_parser("demo", help="run the tasks on the bundled real sample and print short tables")
    p.add_argument("--model", default="demo", help="model id (default: a tiny random-weight demo model)")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="demo-output", help="output folder")
    p.set_defaults(func=_demo)

    p = sub.add_parser("models", help="list model aliases")
    p.set_defaults(func=_models)
    from .tasks import cli_tasks

    cli_tasks.register(sub, add_model_args)
    from .tasks.multimodal import cli as multimodal_cli

    multimodal_cli.register(sub, add_model_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def run():
        from .distributed import init_from_env

        init_from_env()  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
        args.func(args)

    return run_door(run, "panderm", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
