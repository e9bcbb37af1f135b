"""The feature-export door's flag dialect (src/export_visual_features.py): PanDerm-2's flags, and
`all_embeddings.npy` (L2-normalised image embeddings in CSV order) as the reference writes it."""
from __future__ import annotations

import argparse
import os

from ..cli.args import add_allow_absolute_paths, add_max_image_pixels
from ..cli.doors import check_inputs, door_main, finish_help, resolve_device
from . import add_reference_device_arg

#: The door's `{param: flag}` map: an error's `param` is named by this door's flag.
FLAGS = {"image_root": "--data_root", "max_image_pixels": "--max_image_pixels", "image_col": "--img_col"}


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--model_name", default="hf-hub:redlessone/PanDerm2",
                   help="model id (alias, hf-hub:ORG/NAME, local-dir:PATH, ...; see `panderm models`)")
    p.add_argument("--checkpoint", default=None, help="optional open_clip state dict replacing the model's weights")
    p.add_argument("--csv_path", required=True, help="required: CSV with one row per image")
    p.add_argument("--img_col", default="filename", help="CSV column holding the image paths")
    p.add_argument("--data_root", required=True, help="required: folder the image paths are relative to")
    p.add_argument("--batch_size", type=int, default=2048, help="images per batch")
    p.add_argument("--num_workers", type=int, default=16, help="DataLoader workers")
    add_reference_device_arg(p)
    p.add_argument("--output_dir", default="./embeddings", help="folder for all_embeddings.npy")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    add_allow_absolute_paths(p)
    add_max_image_pixels(p)
    return finish_help(p)


def run(args) -> None:
    """Embed every image of the CSV (fp32, full decoding, no EXIF rotation: as the reference) and save them."""
    check_inputs([(args.csv_path, "--csv_path")])  # a missing CSV: one line before torch is imported
    from ..tasks.export import export_features

    out = os.path.join(args.output_dir, "all_embeddings.npy")
    export_features(
        args.model_name, args.csv_path, args.img_col, out, root=args.data_root, kind="embed", normalize=True,
        checkpoint=args.checkpoint, device=resolve_device(args.device), batch_size=args.batch_size,
        num_workers=args.num_workers, precision="fp32", exif_transpose=False,
        allow_outside_root=args.allow_outside_root, max_image_pixels=args.max_image_pixels,
    )
    print(f"saved {out}")


def main(argv=None, description: str = "") -> int:
    return door_main(build_parser(description), run, "export_visual_features.py", FLAGS, argv)
