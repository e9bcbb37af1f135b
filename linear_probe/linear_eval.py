#!/usr/bin/env python
"""Reference door: PanDerm-2 `linear_probe/linear_eval.py` flags and output files.

By default it reproduces the reference: the reference feature of each model family,
Resize 256 (bilinear) → CenterCrop 224 → ImageNet mean with std (0.228, 0.224, 0.225),
C = D·K/100, L-BFGS, seed 0, one-vs-one AUROC. Image paths are joined to --root_path
when it is given (the reference ignores it), else relative to the working directory.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat.linear_probe_door import RANDOM_WEIGHTS, main as door_main  # noqa: E402,F401


def main(argv=None) -> int:
    return door_main(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
