#!/usr/bin/env python
"""Reference door: PanDerm-2 `src/main.py` zero-shot classification and retrieval flags.

Example (from the repository root):
    python src/main.py --val-data="" --dataset-type csv --batch-size 1024 \
        --zeroshot-eval1 data/zero-shot-classification/pad-zero-shot-test.csv \
        --csv-label-key label --csv-img-key image_path --model hf-hub:redlessone/PanDerm2
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from panderm.compat.main_door import main as door_main  # noqa: E402


def main(argv=None) -> int:
    return door_main(argv)


if __name__ == "__main__":
    sys.exit(main())
