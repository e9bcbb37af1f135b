#!/usr/bin/env python
"""Reference door: PanDerm-2 `3_train_biased-cbm_binary-class.py` (CBM trained on train codes, tested on test codes).

`SGDClassifier(log_loss, l1, alpha=0.001, random_state=42)` fit on `--train_embeddings` with the labels of
`--train_csv` and scored on `--test_embeddings` / `--test_csv`; prints ROC-AUC, macro-F1 and accuracy (3 dp).
The label is the CSVs' last column, as the reference takes it, unless `--label_col NAME`. `--output` gets
`classifier_weights.npy`, `classifier_intercept.npy` and `biased_cbm.json`. Re-run it with the intervened test
codes (from 4_intervention_CBM.py) and no `--output` to see the intervention's effect: with random_state 42 the
classifier is the same. The reference's `--image_root` and `--image_col` (required there) are optional here and
ignored, with a line saying so: the reference only rewrites the image column into paths it never reads.
`--label_col`, `--random_state` and `--gpu` are ours.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402

IGNORED = concept_doors.IGNORED_BIASED_CBM


def build_parser():
    return concept_doors.build_biased_cbm_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_biased_cbm(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
