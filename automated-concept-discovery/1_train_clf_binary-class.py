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
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, report_ignored, run_door, setup_logging  # noqa: E402

# The reference only joins these into an image-path column it never reads, or picks a GPU for a CPU model.
IGNORED = {
    "image_col": "no image is read (the reference only builds image paths from it)",
    "image_dir": "no image is read (the reference only builds image paths from it; the label stays the third column)",
    "gpu": "the classifier (sklearn SGD) runs on CPU",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--csv", required=True, help="required: CSV with one row per image (labels)")
    p.add_argument("--embeddings", required=True, help="[N, F] SAE codes or [N, D] embeddings, CSV row order")
    p.add_argument("--image_col", default=None, help="image column (reference default ImageID); ignored")
    p.add_argument("--image_dir", default=None, help="image folder; ignored")
    p.add_argument("--gpu", type=int, default=None, help="GPU index; ignored (the classifier runs on CPU)")
    p.add_argument("--output", default=None, help="folder for the mean weights and intercept")
    p.add_argument("--label_col", default=None, help="label column by name (default: the third column)")
    p.add_argument("--split_col", default=None, help="train/test column to use instead of the 50 random splits")
    p.add_argument("--n_splits", type=int, default=50, help="random train/test splits averaged")
    p.add_argument("--seed", type=int, default=0, help="split i uses random_state seed+i (0: the reference)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    report_ignored(args, IGNORED)

    def run():
        from panderm.tasks.concepts.run import run_cbm

        r = run_cbm(args.csv, args.embeddings, args.output, label_col=args.label_col, label_position=2,
                    split_col=args.split_col, n_splits=args.n_splits, seed=args.seed, binary=True)
        s = r["results"]["features"]["summary"]
        print(f"label column: {r['label_col']}; {r['results']['features']['n_splits']} split(s)")
        print(f"Mean ROC-AUC: {s['auroc']['mean']:.3f}")
        print(f"Mean F1: {s['macro_f1']['mean']:.3f}")
        print(f"non-zero mean weights: {r['results']['features']['n_nonzero_mean_coef']}")
        if args.output:
            print(f"saved {os.path.join(args.output, 'mean_classifier_weights.npy')}")

    return run_door(run, "1_train_clf_binary-class.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
