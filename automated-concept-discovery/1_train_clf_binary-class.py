#!/usr/bin/env python
"""Reference door: PanDerm-2 `1_train_clf_binary-class.py` (the L1 logistic-regression CBM).

50 stratified 80/20 splits (`random_state=i`), `SGDClassifier(log_loss, l1, alpha=0.001)` seeded with the
split's seed; prints mean ROC-AUC and macro-F1 (3 dp). The label is the third CSV column, as the reference
takes it, unless `--label_col NAME` names it; it must have two classes. `--split_col NAME` uses that
train/test column instead of the 50 splits (the reference ignores it). `--embeddings` are the SAE codes (the
CBM) or the raw embeddings (the baseline), one row per CSV row. `--output` gets
`mean_classifier_weights.npy`, `mean_classifier_intercept.npy`, `cbm_metrics.json`, `cbm_splits.csv`.
The reference's `--image_col`, `--image_dir` and `--gpu` are accepted and ignored, with a line saying so:
no image is read and the classifier runs on CPU.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402

IGNORED = concept_doors.IGNORED_TRAIN_CLF


def build_parser():
    return concept_doors.build_train_clf_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_train_clf(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
