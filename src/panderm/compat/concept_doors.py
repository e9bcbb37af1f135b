"""The concept doors' flag dialects (automated-concept-discovery/*.py): the reference scripts' flags, each
mapped onto panderm.tasks.concepts (docs/REFERENCE.md). Reference flags that change nothing here are accepted
and reported as ignored, with the reason (each door's IGNORED_* map)."""
from __future__ import annotations

import argparse
import os

from ..cli.doors import door_main, finish_help, resolve_device


#: The concept doors' `{param: flag}` map: an error's `param` is named by these doors' flags.
#: nothing the parsers cannot say: every param is named by the option with that destination
FLAGS: dict[str, str] = {}

# The reference only joins these into an image-path column it never reads.
_NO_IMAGES = {
    "image_col": "no image is read (the reference only builds image paths from it)",
    "image_dir": "no image is read (the reference only builds image paths from it; the label stays the third column)",
}


def _new_parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, allow_abbrev=False)


def _finish(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def _add_labelled_rows(p: argparse.ArgumentParser, embeddings_help: str, gpu_help: str) -> None:
    """The labels CSV and its rows' codes, as scripts 1 and 2 take them (image flags and GPU accepted, unused)."""
    p.add_argument("--csv", required=True, help="required: CSV with one row per image (labels)")
    p.add_argument("--embeddings", required=True, help=embeddings_help)
    p.add_argument("--image_col", default=None, help="image column (reference default ImageID); ignored")
    p.add_argument("--image_dir", default=None, help="image folder; ignored")
    p.add_argument("--gpu", type=int, default=None, help=gpu_help)


def _add_label_col(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label_col", default=None, help="label column by name (default: the third column)")


def _gpu(index) -> str:
    """The reference's `--gpu N`; without it GPU 0 when there is one, else the CPU."""
    return resolve_device("auto" if index is None else f"cuda:{index}")


# -- automated-concept-discovery/0_extract_sae_activations.py ------------

def build_extract_activations_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
    p.add_argument("--checkpoint", required=True, help="required: SAE autoencoder.pth")
    p.add_argument("--embeddings", required=True, help="required: embeddings .npy [N, D]")
    p.add_argument("--output", required=True, help="required: output .npy of SAE activations [N, F]")
    p.add_argument("--batch_size", type=int, default=512, help="rows per batch")
    p.add_argument("--gpu", type=int, default=None, help="GPU index (default: GPU 0 when available, else CPU)")
    return _finish(p)


def _extract_activations(args) -> None:
    from ..tasks.concepts.run import extract_activations

    s = extract_activations(args.checkpoint, args.embeddings, args.output, args.batch_size, device=_gpu(args.gpu))
    print(f"Number of features activated at least once: {s['n_active']} / {s['n_latents']}")
    print(f"saved {args.output} {tuple(s['shape'])}")


def main_extract_activations(argv=None, description: str = "") -> int:
    return door_main(build_extract_activations_parser(description), _extract_activations,
                     "0_extract_sae_activations.py", FLAGS, argv)


# -- automated-concept-discovery/1_train_clf_binary-class.py -------------

IGNORED_TRAIN_CLF = {**_NO_IMAGES, "gpu": "the classifier (sklearn SGD) runs on CPU"}


def build_train_clf_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
    _add_labelled_rows(p, "[N, F] SAE codes or [N, D] embeddings, CSV row order",
                       "GPU index; ignored (the classifier runs on CPU)")
    p.add_argument("--output", default=None, help="folder for the mean weights and intercept")
    _add_label_col(p)
    p.add_argument("--split_col", default=None, help="train/test column to use instead of the 50 random splits")
    p.add_argument("--n_splits", type=int, default=50, help="random train/test splits averaged")
    p.add_argument("--seed", type=int, default=0, help="split i uses random_state seed+i (0: the reference)")
    return _finish(p)


def _train_clf(args) -> None:
    from ..tasks.concepts.run import run_cbm

    r = run_cbm(args.csv, args.embeddings, args.output, label_col=args.label_col, label_position=2,
                split_col=args.split_col, n_splits=args.n_splits, seed=args.seed, binary=True)
    s = r["results"]["features"]["summary"]
    print(f"label column: {r['label_col']}; {r['results']['features']['n_splits']} split(s)")
    print(f"Mean ROC-AUC: {s['auroc']['mean']:.3f}")
    print(f"Mean F1: {s['macro_f1']['mean']:.3f}")
    print(f"non-zero mean weights: {r['results']['features']['n_nonzero_mean_coef']}")
    if args.output:
        print(f"saved {os.path.join(args.output, 'mean_classifier_weights.npy')}")


def main_train_clf(argv=None, description: str = "") -> int:
    return door_main(build_train_clf_parser(description), _train_clf, "1_train_clf_binary-class.py", FLAGS, argv,
                     IGNORED_TRAIN_CLF)


# -- automated-concept-discovery/2_global_concept_viz_binary-class.py ----

IGNORED_CONCEPT_VIZ = {**_NO_IMAGES, "gpu": "the computation is a mean over rows, on CPU"}


def build_concept_viz_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
    _add_labelled_rows(p, "[N, F] SAE codes, CSV row order", "GPU index; ignored")
    _add_label_col(p)
    p.add_argument("--topk", type=int, default=10, help="latents kept per class")
    p.add_argument("--out_dir", required=True, help="folder for class_importance.json / .npz")
    return _finish(p)


def _concept_viz(args) -> None:
    from ..errors import DataError
    from ..tasks.concepts.retrieve import class_importance, save_class_importance
    from ..tasks.concepts.run import load_array, read_labels

    if args.topk < 1:
        raise DataError(f"the number of latents per class must be >= 1, got {args.topk}", param="topk")
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


def main_concept_viz(argv=None, description: str = "") -> int:
    return door_main(build_concept_viz_parser(description), _concept_viz, "2_global_concept_viz_binary-class.py",
                     FLAGS, argv, IGNORED_CONCEPT_VIZ)


# -- automated-concept-discovery/3_train_biased-cbm_binary-class.py ------

# The reference joins these into image paths and never reads them; GPU choice is moot for sklearn SGD.
IGNORED_BIASED_CBM = {
    "image_root": "no image is read (the reference only joins it to the image column)",
    "image_col": "no image is read (the reference only rewrites that column into paths; the label stays last)",
    "gpu": "the classifier (sklearn SGD) runs on CPU",
}


def build_biased_cbm_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
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
    return _finish(p)


def _biased_cbm(args) -> None:
    from ..tasks.concepts.run import biased_cbm

    r = biased_cbm(args.train_csv, args.test_csv, args.train_embeddings, args.test_embeddings, args.output,
                   label_col=args.label_col, random_state=args.random_state, binary=True)
    m = r["metrics"]
    print(f"label column: {r['label_col']}")
    print(f"ROC-AUC: {m['auroc']:.3f}")
    print(f"F1: {m['macro_f1']:.3f}")
    print(f"Accuracy: {m['accuracy']:.3f}")
    if args.output:
        print(f"saved {os.path.join(args.output, 'classifier_weights.npy')}")


def main_biased_cbm(argv=None, description: str = "") -> int:
    return door_main(build_biased_cbm_parser(description), _biased_cbm, "3_train_biased-cbm_binary-class.py", FLAGS,
                     argv, IGNORED_BIASED_CBM)


# -- automated-concept-discovery/4_intervention_CBM.py -------------------

# Parsed by the reference and never read there either.
IGNORED_INTERVENTION = {
    "data_dir": "unused by the reference too (images and labels are not needed to edit codes)",
    "project_root": "unused by the reference too (it only located the reference's open_clip sources)",
}


def build_intervention_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
    p.add_argument("--top_n", type=int, default=5, help="number of latents intervened on")
    p.add_argument("--concept", default="hair", help="concept text, e.g. hair, 'purple ink', 'calibration scale'")
    p.add_argument("--method", default="matching", choices=["matching", "topk"],
                   help="matching: latents matched to concept texts; topk: the classifier's top-N latents")
    p.add_argument("--split", default="test", choices=["train", "test"], help="folder under --result_dir to edit")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (text encoder for matching)")
    p.add_argument("--data_dir", default=None, help="ignored (unused by the reference too)")
    p.add_argument("--result_dir", default=None, help="folder holding before-intervention/ and <split>/")
    p.add_argument("--project_root", default=None, help="ignored (unused by the reference too)")
    p.add_argument("--sae_checkpoint", required=True, help="autoencoder.pth or a panderm SAE folder")
    p.add_argument("--clip_model_name", "--model", dest="model", default="hf-hub:redlessone/PanDerm2",
                   help="model whose text encoder embeds --concept")
    p.add_argument("--clip_checkpoint", "--checkpoint", dest="checkpoint", default=None,
                   help="weights file for the model (a 'state_dict' dict and 'module.' prefixes are accepted)")
    p.add_argument("--importance_file", default=os.path.join("before-intervention", "classifier_weights.npy"),
                   help="classifier weights, relative to --result_dir")
    p.add_argument("--activation_file", default="learned_activation.npy",
                   help="codes, relative to <result_dir>/<split>")
    p.add_argument("--output_file", default="learned_activation_after_intervention.npy",
                   help="edited codes, relative to <result_dir>/<split>")
    p.add_argument("--weights", default=None, help="classifier weights .npy (overrides --importance_file)")
    p.add_argument("--activations", default=None, help="codes to edit .npy (overrides --activation_file)")
    p.add_argument("--output", default=None, help="edited codes .npy (overrides --output_file)")
    return _finish(p)


def _intervention(args) -> None:
    from ..errors import PandermError
    from ..tasks.concepts.run import intervene_codes

    def path(given, *parts):
        if given:
            return given
        if os.path.isabs(parts[-1]):  # os.path.join keeps an absolute last part, as in the reference
            return parts[-1]
        if not args.result_dir:
            raise PandermError("give --result_dir (or --weights, --activations and --output)")
        return os.path.join(args.result_dir, *parts)

    weights = path(args.weights, args.importance_file)
    codes = path(args.activations, args.split, args.activation_file)
    out = path(args.output, args.split, args.output_file)
    info = intervene_codes(args.sae_checkpoint, weights, codes, out, concept=args.concept, method=args.method,
                           top_n=args.top_n, model_id=args.model, checkpoint=args.checkpoint,
                           device=resolve_device(args.device, reference_cuda=True))
    if info["random_init"]:
        print("RANDOM WEIGHTS: the concept text was encoded by an untrained model")
    what = f"matched to {args.concept!r}" if args.method == "matching" else "with the largest |weight|"
    print(f"zeroed {len(info['latents'])} latents {what}: {info['latents']}")
    print(f"saved {out}")


def main_intervention(argv=None, description: str = "") -> int:
    return door_main(build_intervention_parser(description), _intervention, "4_intervention_CBM.py", FLAGS, argv,
                     IGNORED_INTERVENTION)


# -- automated-concept-discovery/train_sae.py ----------------------------

# Parsed by the reference but never used in its computation.
IGNORED_TRAIN_SAE = {
    "data": "a run label; the embeddings file decides what is trained",
    "backbone": "a run label (the reference only prints it); the embeddings file decides what is trained",
    "trial": "unused by the reference's PanDerm-2 train_sae.py",
}


def build_train_sae_parser(description: str = "") -> argparse.ArgumentParser:
    p = _new_parser(description)
    p.add_argument("--save_dir", default="",
                   help="folder holding all_embeddings.npy; outputs go here (default: the current folder)")
    p.add_argument("--embeddings", default=None,
                   help="embeddings .npy to train on (default <save_dir>/all_embeddings.npy)")
    p.add_argument("--expansion", type=int, default=8, help="latents = expansion x embedding width")
    p.add_argument("--l1", type=float, default=3e-5, help="L1 sparsity penalty")
    p.add_argument("--epochs", type=int, default=200, help="training epochs")
    p.add_argument("--batch_size", type=int, default=4096, help="rows per batch")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    p.add_argument("--resample_every", type=int, default=0,
                   help="resample dead latents every N epochs (0: never, the reference)")
    p.add_argument("--pre_bias_init", default="zeros", choices=["zeros", "mean", "geometric_median"],
                   help="initial tied pre-bias (zeros: the reference)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--data", default=None, help="run label (reference default 'ham'); ignored")
    p.add_argument("--backbone", default=None, help="run label; ignored")
    p.add_argument("--trial", default=None, help="run label; ignored")
    p.add_argument("--gpu", default=None, help="GPU index (default: GPU 0 when available, else CPU)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    return _finish(p)


def _train_sae(args) -> None:
    from ..tasks.concepts.run import train_sae_from_file

    embeddings = args.embeddings or os.path.join(args.save_dir, "all_embeddings.npy")
    # The reference's recipe unless asked otherwise: zero pre-bias, no resampling.
    cfg = dict(expansion=args.expansion, l1=args.l1, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
               resample_every=args.resample_every, pre_bias_init=args.pre_bias_init, seed=args.seed,
               device=_gpu(args.gpu))
    flags = {name: f"--{name}" for name in ("pre_bias_init", "resample_every", "epochs", "expansion")}
    s = train_sae_from_file(embeddings, args.save_dir or ".", cfg, progress=not args.quiet, flag_names=flags)
    f = s["final"]
    print(f"SAE {s['d_in']} -> {s['n_latents']} on {s['n_samples']} rows: loss {f['loss']:.4g}, "
          f"FVU {f['fvu']:.4f}, L0 {f['l0']:.1f}, dead {f['dead_fraction']:.3f}")
    print(f"saved {os.path.join(args.save_dir or '.', 'autoencoder.pth')} and learned_activation.npy")


def main_train_sae(argv=None, description: str = "") -> int:
    return door_main(build_train_sae_parser(description), _train_sae, "train_sae.py", FLAGS, argv, IGNORED_TRAIN_SAE)
