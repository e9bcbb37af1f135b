"""The reference doors multimodal_finetune/train.py|test.py: the reference's flag names and, by default, its
computation (BGR input, std 0.228, cv2-style resizing, fp32, drop path as the reference per model,
`--dataset_name` default Derm7pt; docs/REFERENCE.md). The work is `panderm multimodal`'s own handlers.
"""
from __future__ import annotations

import argparse

from ..cli.doors import door_main, finish_help
from ..cli.multimodal import _with_flags, run_test, run_train
from ..cli.multimodal_args import add_recipe_args, add_train_args, str2bool


#: The multimodal doors' `{param: hint}` map (other params: the option with that destination)
FLAGS = {"run_dir": "pass --overwrite or choose another --output_dir", "modality": "--use_cli or --use_derm",
         "data_path": "--data_path"}


def _add_ref_model(p) -> None:
    p.add_argument("--model_name", dest="model", default="PanDerm-v2",
                   help="PanDerm-v2 (= PanDerm2), PanDerm-Large / PanDerm-Base (PanDerm v1, with --pretrain_path) "
                        "or any panderm model id (local-dir:, hf-hub:, timm:, ...)")
    p.add_argument("--checkpoint", "--pretrain_path", dest="checkpoint", default=None,
                   help="encoder weights file (the reference's --pretrain_path, e.g. the PanDerm v1 .pth)")
    p.add_argument("--pretrained", default=None, help="accepted as in the reference, which never reads it")
    p.add_argument("--fold", type=int, default=0, help="accepted as in the reference, which never reads it")
    p.add_argument("--allow_random_init", dest="allow_random_init", action="store_true",
                   help="evaluate random weights when none are found")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--cuda", type=str2bool, nargs="?", const=True, default=None,
                   help="--cuda / --cuda true: use the GPU (CPU with a warning if none); --cuda false: CPU. "
                        "Overrides --device")


def reference_parser(mode: str) -> argparse.ArgumentParser:
    """The doors' parser: the reference's flags; BGR input and paired augmentation on."""
    p = argparse.ArgumentParser(prog=f"multimodal_finetune/{mode}.py",
                                description=f"PanDerm-2 multimodal finetune ({mode}), reference flags",
                                allow_abbrev=False)
    _add_ref_model(p)
    add_recipe_args(p, ref=True)
    p.add_argument("--rgb", dest="bgr", action="store_false", help="feed RGB (the reference fed cv2 BGR)")
    p.set_defaults(bgr=True, reference=True)  # the reference's file layout and metric names
    if mode == "train":
        add_train_args(p, ref=True)
    else:
        p.add_argument("--model_path", default=None,
                       help="best.pt (or a reference state_dict .pth); default: the best checkpoint in "
                            "--output_dir (best.pt, else the newest best*_model_<epoch>.pth)")
        p.add_argument("--full_report", action="store_true",
                       help="also write evaluation_metrics.csv, confusion_matrix.png and results.json "
                            "(results_test.json where --output_dir holds the training run's results.json)")
        # the reference's test.py takes --epochs (its scripts pass it) and never reads it
        p.add_argument("--epochs", type=int, default=None,
                       help="accepted as in the reference (its scripts pass it); not used by test")
    return finish_help(p)


def run_reference(mode: str, argv=None) -> int:
    parser = reference_parser(mode)
    run = _with_flags(run_train if mode == "train" else run_test, parser, FLAGS)
    return door_main(parser, run, f"multimodal_finetune/{mode}.py", FLAGS, argv)
