#!/usr/bin/env python
"""Reference door: PanDerm-2 `multimodal_finetune/test.py` flags (docs/REFERENCE.md).

Defaults reproduce the reference: BGR input (`--rgb` to fix), ImageNet std 0.228
(`--imagenet_std`), cv2-style resizing (`--resize_mode antialias`), fp32 (`--precision`),
drop path 0.1 in PanDerm-2 towers (`--drop_path`), paired augmentation, Adam with coupled
weight decay, cosine per epoch; `--dataset_name Derm7pt|MILK-11|PAD` as the reference.
See `python test.py --help`.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat.multimodal_door import run_reference  # noqa: E402


def main(argv=None) -> int:
    return run_reference("test", argv)


if __name__ == "__main__":
    sys.exit(main())
