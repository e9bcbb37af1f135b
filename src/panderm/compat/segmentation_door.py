"""The segmentation door's flag dialect (segmentation/run.py): PanDerm v1's flags and its
`results_<dataset>_<fold>_<seed>.json` (Dsc, Jac); docs/REFERENCE.md."""
from __future__ import annotations

import argparse

from ..cli.doors import door_main, finish_help, resolve_device

#: The door's `{param: flag}` map for params whose option has another name (the rest: the option with that
#: destination, `cli.doors.parser_flags`).
FLAGS = {"percent_data": "--percent", "data_root": "--parent_path", "image_size": "--img_size"}


def build_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False)
    p.add_argument("--dataset", default="ISIC2018",
                   help="ISIC2018 (folders under --parent_path) or the name written in the results file with --csv")
    p.add_argument("--parent_path", default="./data/", help="folder holding ISIC2018/")
    p.add_argument("--csv", default=None, help="instead of ISIC2018: a CSV with image_path, mask_path, split")
    p.add_argument("--model", default="PanDerm-L", help="encoder alias or id (see `panderm models`)")
    p.add_argument("--pretrained_path", "--checkpoint", dest="checkpoint", default=None, help="encoder weights")
    p.add_argument("--allow_random_init", action="store_true", help="train from random weights when none are found")
    p.add_argument("--percent", type=float, default=100.0, help="percent of training images (seeded, sorted)")
    p.add_argument("--fold", type=int, default=0, help="fold index, written in the results file name")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--epochs", type=int, default=100, help="training epochs")
    p.add_argument("--batch_size", type=int, default=1, help="images per batch")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--img_size", type=int, default=224, help="input size in px")
    p.add_argument("--smoke_test", action="store_true", help="1 epoch on 8/4/4 images")
    p.add_argument("--save_dir", default="./results", help="results_<dataset>_<fold>_<seed>.json and run_* folders")
    p.add_argument("--device", default=None, help="default: the GPU when present, else CPU")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="log to this wandb project (off by default)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def run(args) -> None:
    """Train and test the reference recipe; print Dice and Jaccard."""
    from ..tasks.segmentation.reference import run_reference

    res = run_reference(args.model, args.checkpoint, args.dataset, args.parent_path, args.save_dir,
                        fold=args.fold, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, percent=args.percent, image_size=args.img_size, smoke_test=args.smoke_test,
                        device=resolve_device(args.device or "auto"), csv=args.csv,
                        allow_random_init=args.allow_random_init, wandb_project=args.wandb)
    print(f"Test Dsc {res['Dsc']:.4f}  Jac {res['Jac']:.4f}  ({res['n_test']} images)")


def main(argv=None, description: str = "") -> int:
    return door_main(build_parser(description), run, "segmentation/run.py", FLAGS, argv)
