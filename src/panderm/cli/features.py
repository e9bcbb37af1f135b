"""`panderm features` (image embeddings to a .npy file) and `panderm preresize` (smaller copies of a CSV's
images, for faster decoding)."""
from __future__ import annotations

import logging
from pathlib import Path

from .args import add_allow_absolute_paths, add_decode_arg, add_max_image_pixels, add_model_args, batch_size
from .doors import precheck, resolve_device


def _features(args) -> None:
    from ..report import format_table
    from ..tasks.export import export_features

    if args.batch_size == "auto" or args.compile:
        logging.getLogger("panderm.features").setLevel(logging.INFO)  # show the chosen batch size / compile note
    meta = export_features(
        args.model, args.csv, args.image_col, args.out, root=args.root, kind=args.kind, normalize=args.normalize,
        checkpoint=args.checkpoint, device=resolve_device(args.device), batch_size=args.batch_size,
        num_workers=args.workers, precision=args.precision, cache=not args.no_cache, cache_dir=args.cache_dir,
        allow_random_init=args.allow_random_init,
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


def _preresize(args) -> None:
    from ..preresize import preresize

    summary = preresize(args.csv, args.image_col, args.out, root=args.root, size=args.size, quality=args.quality,
                        workers=args.workers,
                        max_image_pixels=args.max_image_pixels)
    print(summary.line())
    print(f"use it with: --csv {args.csv} --root {args.out}")


def register_features(sub, add_model_args=add_model_args) -> None:
    p = sub.add_parser("features", help="extract image embeddings to a .npy file", conflict_handler="resolve",
                       allow_abbrev=False)
    add_model_args(p)
    p.add_argument("--batch-size", type=batch_size, default=64,
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


def register_preresize(sub, add_model_args=add_model_args) -> None:
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
