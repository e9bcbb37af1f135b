#!/usr/bin/env python
"""Reference door: PanDerm-2 `2_global_concept_viz_binary-class.py` (per-class global importance of SAE latents).

Centres the features (`--embeddings`, the SAE codes, one row per `--csv` row), averages the centred rows per
class and keeps the top `--topk` latents by |mean| for each class. The label is the third CSV column, as
`1_train_clf_binary-class.py` takes it, unless `--label_col NAME`. Writes to `--out_dir`:
`class_importance.json` (classes, and per class `top_indices` / `top_values`) and `class_importance.npz`
(`class{i}_top_indices`, `class{i}_top_values`, `class{i}_mean_activations` for the i-th class of the JSON).
Unlike the reference's `class_importance.npy` (a pickled dict), nothing is pickled; read them with
`panderm.tasks.concepts.retrieve.load_class_importance`. The reference's unused xgboost import is gone.
The reference's `--image_col`, `--image_dir` and `--gpu` are accepted and ignored, with a line saying so.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402

IGNORED = concept_doors.IGNORED_CONCEPT_VIZ


def build_parser():
    return concept_doors.build_concept_viz_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_concept_viz(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
