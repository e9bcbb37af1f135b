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
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, report_ignored, run_door, setup_logging  # noqa: E402

# The reference only joins these into an image-path column it never reads, or picks a GPU for numpy work.
IGNORED = {
    "image_col": "no image is read (the reference only builds image paths from it)",
    "image_dir": "no image is read (the reference only builds image paths from it; the label stays the third column)",
    "gpu": "the computation is a mean over rows, on CPU",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--csv", required=True, help="required: CSV with one row per image (labels)")
    p.add_argument("--embeddings", required=True, help="[N, F] SAE codes, CSV row order")
    p.add_argument("--image_col", default=None, help="image column (reference default ImageID); ignored")
    p.add_argument("--image_dir", default=None, help="image folder; ignored")
    p.add_argument("--gpu", type=int, default=None, help="GPU index; ignored")
    p.add_argument("--label_col", default=None, help="label column by name (default: the third column)")
    p.add_argument("--topk", type=int, default=10, help="latents kept per class")
    p.add_argument("--out_dir", required=True, help="folder for class_importance.json / .npz")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    report_ignored(args, IGNORED)

    def run():
        from panderm.errors import DataError
        from panderm.tasks.concepts.retrieve import class_importance, save_class_importance
        from panderm.tasks.concepts.run import load_array, read_labels

        if args.topk < 1:
            raise DataError(f"--topk must be >= 1, got {args.topk}")
        labels, col, _, n = read_labels(args.csv, args.label_col, position=2)
        X = load_array(args.embeddings, "embeddings", n_rows=n, rows_of=f"the CSV {args.csv}")
        result = class_importance(X, labels, args.topk)
        files = save_class_importance(result, args.out_dir, extra={
            "csv": args.csv, "embeddings": args.embeddings, "label_col": col, "topk": args.topk})
        print(f"label column: {col}; {len(result)} classes")
        for c, r in result.items():
            pairs = ", ".join(f"{int(i)}:{v:+.4f}" for i, v in zip(r["top_indices"], r["top_values"]))
            print(f"class {c}: {pairs}")
        print(f"saved {files['json']} and {files['npz']}")

    return run_door(run, "2_global_concept_viz_binary-class.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
