"""The `panderm` command: one subcommand per task.

The CLI does the right thing by default (the model's own preprocessing, RGB
images, seeded classifiers); reference behaviour is behind flags and in the
reference-compatible doors (src/main.py, linear_probe/, ...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .cli_support import (
    add_allow_absolute_paths, add_decode_arg, add_max_image_pixels, finish_help, precheck, resolve_device, run_door,
    setup_logging)


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The model flags; `--model` is required (`required=False` where only some settings load a model)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, default=None,
                   help=("required: " if required else "") +
                        "alias (PanDerm2, DermLIP-B16, ...; see `panderm models`), hf-hub:ORG/NAME, "
                        "local-dir:PATH, timm:NAME, ... (demo: a tiny random-weight model, for trying the commands)")
    g.add_argument("--checkpoint", "--pretrained", dest="checkpoint", default=None,
                   help="weights file (or open_clip pretrained tag) for the model")
    g.add_argument("--allow-random-init", action="store_true", help="evaluate random weights when none are found")
    g.add_argument("--device", default="auto",
                   help="auto (default: CUDA when present, else CPU), cpu, cuda or cuda:N; a named device that is "
                        "not there is an error")
    g.add_argument("--batch-size", type=int, default=64, help="images per batch")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: sized from the CPU count)")
    g.add_argument("--precision", default="amp", choices=["amp", "amp_bf16", "bf16", "fp16", "fp32"],
                   help="autocast on CUDA (ignored on CPU)")
    g.add_argument("--no-cache", action="store_true", help="always re-encode images")
    g.add_argument("--cache-dir", default=None, help="feature cache folder (default $PANDERM_CACHE/features)")


def _features(args) -> None:
    from .report import format_table
    from .tasks.export import export_features

    if args.batch_size == "auto" or args.compile:
        import logging

        logging.getLogger("panderm.features").setLevel(logging.INFO)  # show the chosen batch size / compile note
    meta = export_features(
        args.model, args.csv, args.image_col, args.out, root=args.root, kind=args.kind, normalize=args.normalize,
        checkpoint=args.checkpoint, device=resolve_device(args.device), batch_size=args.batch_size,
        num_workers=args.workers, precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
        allow_random_init=args.allow_random_init, flag_hints={args.image_col: "--image-col"},
        allow_outside_root=args.allow_outside_root, compile=args.compile, max_image_pixels=args.max_image_pixels,
        draft_decode=not args.full_decode,
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
    print(f"wrote {meta['out']} and {Path(meta['out']).with_suffix('.json')}")


def _batch_size(value: str):
    """`--batch-size N` or `--batch-size auto`."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {value!r}")
    return n


def _preresize(args) -> None:
    from .preresize import preresize

    summary = preresize(args.csv, args.image_col, args.out, root=args.root, size=args.size, quality=args.quality,
                        workers=args.workers, flag_hints={args.image_col: "--image-col"},
                        max_image_pixels=args.max_image_pixels)
    print(summary.line())
    print(f"use it with: --csv {args.csv} --root {args.out}")


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(args.model, args.out, device=resolve_device(args.device), checkpoint=args.checkpoint,
             tasks=DEMO_TASKS)


DEMO_TASKS = ("features", "zeroshot", "retrieval_run", "linear_probe_run")


def _models(args) -> None:
    from .models.registry import ALIASES

    from .report import format_table

    rows = [{"alias": name, "loads": alias.model_id + (f" (pretrained {alias.pretrained})" if alias.pretrained else ""),
             "notes": alias.note} for name, alias in ALIASES.items()]
    rows.append({"alias": "demo", "loads": "built on the fly", "notes": "tiny random-weight model (demos and tests)"})
    wanted = (args.filter or "").lower()
    rows = [r for r in rows if wanted in " ".join(r.values()).lower()]
    print(format_table(rows) if rows else f"no alias matches {args.filter!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panderm", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"panderm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log more detail (debug messages)")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or notes; results, warnings and errors still print")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="extract image embeddings to a .npy file", conflict_handler="resolve",
                       allow_abbrev=False)
    add_model_args(p)
    p.add_argument("--batch-size", type=_batch_size, default=64,
                   help="images per batch, or 'auto': the largest of 1024, 512, ... that fits in GPU memory "
                        "(probed on a synthetic batch, 20%% headroom); 64 on CPU (default: 64)")
    p.add_argument("--compile", action="store_true",
                   help="run the encoder through torch.compile (compiled once per process; same features, same "
                        "cache key; pays a compile time of ~0.5-2 min, worth it for large runs on GPU)")
    add_decode_arg(p)
    p.add_argument("--csv", required=True, help="required: CSV with one row per image")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--kind", default="embed", choices=["embed", "features", "tokens"],
                   help="embed: projected joint space; features: pooled pre-projection; tokens: the CLS token row")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each row")
    p.add_argument("--out", required=True, help="output .npy (a .json sidecar is written next to it)")
    add_allow_absolute_paths(p)
    add_max_image_pixels(p)
    p.set_defaults(func=_features, precheck=precheck(out=None))

    p = sub.add_parser("preresize", help="write copies of a CSV's images with the short side resized (faster decoding)",
                       description="Write a copy of every image of the CSV under --out at the same relative path "
                                   "(so the CSV works with --root OUT), the shorter side resized to --size px "
                                   "(Lanczos, aspect kept, EXIF orientation applied, RGB; never upscaled: smaller "
                                   "images are copied as they are). JPEG stays JPEG (quality --quality), PNG stays "
                                   "PNG. Up-to-date copies are skipped, so a rerun is cheap.", allow_abbrev=False)
    p.add_argument("--csv", required=True, help="required: CSV with one row per image")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--out", required=True, help="output folder (the same relative layout as --root)")
    p.add_argument("--size", type=int, default=448,
                   help="shorter side in px (default 448: twice the 224 px input of most models, so the model's own "
                        "resize still does the final antialiased step and Resize(256)+CenterCrop(224) transforms "
                        "have room; use ≥ 2× the largest input size of the models you will run, e.g. 672 for 336 px)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of resized JPEG copies (default 95)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count; 0 or 1: in-process)")
    add_max_image_pixels(p)
    p.set_defaults(func=_preresize)

    p = sub.add_parser("demo", help="run the tasks on the bundled real sample and print short tables",
                       allow_abbrev=False)
    p.add_argument("--model", default="demo", help="model id (default: a tiny random-weight demo model)")
    p.add_argument("--checkpoint", default=None, help="weights file (or open_clip pretrained tag) for --model")
    p.add_argument("--device", default="auto",
                   help="auto (default: CUDA when present, else CPU), cpu, cuda or cuda:N; a named device that is "
                        "not there is an error")
    p.add_argument("--out", default="demo-output", help="output folder")
    p.set_defaults(func=_demo)

    p = sub.add_parser("models", help="list model aliases", allow_abbrev=False)
    p.add_argument("--filter", default=None, metavar="TEXT", help="only aliases whose name, target or notes hold TEXT")
    p.set_defaults(func=_models)
    from .tasks import cli_tasks

    cli_tasks.register(sub, add_model_args)
    from .tasks.multimodal import cli as multimodal_cli

    multimodal_cli.register(sub, add_model_args)
    from .tasks.segmentation import cli as segmentation_cli

    segmentation_cli.register(sub, add_model_args)
    from .analysis import cli as analysis_cli

    analysis_cli.register(sub, add_model_args)
    return finish_help(parser)


#: The analysis settings' flags (errors name the setting; the door names its flag).
ANALYSIS_FLAGS = {"group_col": "--group-col", "bins": "--bins", "min_group": "--min-group",
                  "calibration_bins": "--calibration-bins", "calibrate": "--calibrate"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug, -q and -v are global flags; users type them after the subcommand too ("panderm features ... -q").
    flags = {"--debug": "debug", "-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
    given = {flags[a] for a in argv if a in flags}
    if {"quiet", "verbose"} <= given:
        parser.error("-q/--quiet and -v/--verbose exclude each other")
    args = parser.parse_args([a for a in argv if a not in flags])
    for name in ("debug", "quiet", "verbose"):
        setattr(args, name, name in given)
    setup_logging(args.verbose, args.quiet)

    def run():
        if getattr(args, "precheck", None) is not None:
            args.precheck(args)  # missing CSV, --out holding a run: one line before torch is imported
        from .distributed import finish, init_from_env

        init_from_env()  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
        args.func(args)
        finish()

    return run_door(run, "panderm", debug=args.debug, flags={"image_root": "--root", **ANALYSIS_FLAGS,
                                                         **getattr(args, "door_flags", {})})


if __name__ == "__main__":
    sys.exit(main())
