#!/usr/bin/env python
"""Reference door: export L2-normalised image embeddings (`all_embeddings.npy`, CSV order).

Takes the reference flags of PanDerm-2's `src/export_visual_features.py`. The flags are
read by `panderm.compat.export_door`, the work is done by `panderm.tasks.export.export_features`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from panderm.compat.export_door import main as door_main  # noqa: E402


def main(argv=None) -> int:
    return door_main(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
