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
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, report_ignored, run_door, setup_logging  # noqa: E402

# The reference joins these into image paths and never reads them; GPU choice is moot for sklearn SGD.
IGNORED = {
    "image_root": "no image is read (the reference only joins it to the image column)",
    "image_col": "no image is read (the reference only rewrites that column into paths; the label stays last)",
    "gpu": "the classifier (sklearn SGD) runs on CPU",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--train_csv", required=True, help="required: training CSV")
    p.add_argument("--test_csv", required=True, help="required: test CSV")
    p.add_argument("--train_embeddings", required=True, help="train SAE codes, train CSV row order")
    p.add_argument("--test_embeddings", required=True, help="test SAE codes (or intervened codes), test CSV order")
    p.add_argument("--image_root", default=None, help="image folder; ignored")
    p.add_argument("--image_col", default=None, help="image column; ignored")
    p.add_argument("--output", default=None, help="folder for classifier_weights.npy / classifier_intercept.npy")
    p.add_argument("--label_col", default=None, help="label column by name (default: the last column)")
    p.add_argument("--random_state", type=int, default=42, help="seed of the classifier")
    p.add_argument("--gpu", default=None, help="ignored: the classifier runs on CPU")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    report_ignored(args, IGNORED)

    def run():
        from panderm.tasks.concepts.run import biased_cbm

        r = biased_cbm(args.train_csv, args.test_csv, args.train_embeddings, args.test_embeddings, args.output,
                       label_col=args.label_col, random_state=args.random_state, binary=True)
        m = r["metrics"]
        print(f"label column: {r['label_col']}")
        print(f"ROC-AUC: {m['auroc']:.3f}")
        print(f"F1: {m['macro_f1']:.3f}")
        print(f"Accuracy: {m['accuracy']:.3f}")
        if args.output:
            print(f"saved {os.path.join(args.output, 'classifier_weights.npy')}")

    return run_door(run, "3_train_biased-cbm_binary-class.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
