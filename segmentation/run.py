#!/usr/bin/env python
"""Reference door: PanDerm v1 `segmentation/run.py` flags, `results_<dataset>_<fold>_<seed>.json` (Dsc, Jac).

The reference recipe in plain PyTorch (no mmcv/mmsegmentation, no Lightning): a UPerNet head on blocks at
1/3, 1/2, 2/3 and 1 of the encoder's depth, AdamW 1e-4 / wd 0.05, cosine per epoch, 100 epochs, cross-entropy,
colour-only augmentation, mean = std = 0.5, 224 px, batch size 1, best checkpoint by validation Jaccard, test
Dice / Jaccard per image after the largest connected component (empty truth: centre pixel). wandb only with
--wandb. Data: <parent_path>/ISIC2018/{Training,Validation,Test}_Data + *_GroundTruth, or --csv.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat.segmentation_door import main as door_main  # noqa: E402


def main(argv=None) -> int:
    return door_main(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
