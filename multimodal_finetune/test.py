#!/usr/bin/env python
"""Reference door: PanDerm-2 `multimodal_finetune/test.py` flags (ref-panderm2.md §5.4).

Defaults reproduce the reference: BGR input (`--rgb` to fix), paired augmentation,
Adam with coupled weight decay, cosine per epoch. See `python test.py --help`.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.tasks.multimodal.cli import run_reference  # noqa: E402


def main(argv=None) -> int:
    return run_reference("test", argv)


if __name__ == "__main__":
    sys.exit(main())
