"""``panderm concepts``: automated concept discovery (SAE → CBM → explanation → intervention).

Sub-actions ``train-sae``, ``activations``, ``cbm``, ``explain``, ``intervene``, ``retrieve``, ``report``. Each
handler only maps flags to :mod:`panderm.tasks.concepts.run` (``.retrieve``, ``.html_report``), prints a short
table and writes ``results.json`` in its ``--out`` run folder. Unlike the reference doors in
``automated-concept-discovery/``, the SAE follows the recipe of the reference's SAE library (pre-bias at the
geometric median, dead latents resampled every 10 epochs at most 4 times; ``--pre-bias-init zeros
--resample-every 0`` is the reference) and labels are taken by column name.
"""
from __future__ import annotations

import argparse

from .args import add_allow_absolute_paths, add_model_args
from .common import claim, files_model, finish, load_model
from .doors import resolve_device

_FMT = argparse.ArgumentDefaultsHelpFormatter


#: SAEConfig field -> `panderm concepts train-sae` flag, for the hints of the end-of-training warning.
TRAIN_SAE_FLAGS = {"pre_bias_init": "--pre-bias-init", "resample_every": "--resample-every", "epochs": "--epochs",
                   "expansion": "--expansion"}


#: `panderm concepts`' hints for an error's `param`
#: whole hints (every other param: the option with that destination)
FLAGS = {"concepts": "--concepts WORD ...", "embeddings": "--embeddings (L2-normalised ones: panderm features --normalize)"}


def _max_resamples(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {text!r}")
    return value


def _train_sae(args) -> None:
    from ..tasks.concepts.run import train_sae_from_file

    out = claim(args)
    cfg = dict(expansion=args.expansion, n_latents=args.n_latents, k=args.k, l1=args.l1, lr=args.lr,
               batch_size=args.batch_size, epochs=args.epochs, resample_every=args.resample_every,
               max_resamples=args.max_resamples, pre_bias_init=args.pre_bias_init, seed=args.seed,
               device=resolve_device(args.device))
    s = train_sae_from_file(args.embeddings, out, cfg, reference_pth=not args.no_pth, progress=args.progress,
                            flag_names=TRAIN_SAE_FLAGS)
    f = s["final"]
    weights = [v for k, v in s["files"].items() if k in ("safetensors", "sae", "pth", "config")] or [out]
    finish(out, {"task": "concepts train-sae", **s}, [{
        "N": s["n_samples"], "d_in": s["d_in"], "latents": s["n_latents"], "epochs": f["epoch"], "loss": f["loss"],
        "fvu": f["fvu"], "L0": f["l0"], "dead": f["dead_fraction"]}], seed=args.seed, inputs=[args.embeddings],
        model=files_model("sparse autoencoder (trained by this run)", weights), device=cfg["device"])


def _activations(args) -> None:
    from ..tasks.concepts.run import extract_activations

    out = claim(args)
    device = resolve_device(args.device)
    s = extract_activations(args.sae, args.embeddings, out / "activations.npy", args.batch_size, device=device)
    finish(out, {"task": "concepts activations", "sae": args.sae, "embeddings": args.embeddings, **s},
            [{"N": s["shape"][0], "latents": s["n_latents"], "active": s["n_active"]}],
            inputs=[args.embeddings], model=files_model(f"sae:{args.sae}", [args.sae]), device=device)


def _cbm(args) -> None:
    from ..tasks.concepts.run import run_cbm

    out = claim(args)
    r = run_cbm(args.csv, args.embeddings, out, label_col=args.label_col, split_col=args.split_col,
                baseline_npy=args.baseline, n_splits=args.n_splits, alpha=args.alpha, seed=args.seed)
    results = {name: {k: v for k, v in res.items() if k not in ("coef_mean", "intercept_mean", "per_split")}
               for name, res in r["results"].items()}
    rows = [{"features": row["features"], "F": row["n_features"], "splits": row["n_splits"],
             "auroc": row["auroc_mean"], "macro_f1": row["macro_f1_mean"], "accuracy": row["accuracy_mean"],
             "nonzero": row["n_nonzero_mean_coef"]} for row in r["table"].to_dict("records")]
    weights = [v for k, v in r["files"].items() if "weights" in k or "intercept" in k]
    finish(out, {"task": "concepts cbm", "csv": args.csv, "label_col": r["label_col"], "results": results,
                  "files": r["files"]}, rows, csv_files=[args.csv], seed=args.seed,
            inputs=[args.embeddings] + ([args.baseline] if args.baseline else []),
            model=files_model("cbm: SGDClassifier(log_loss, l1) (trained by this run)", weights))


def _explain(args) -> None:
    from ..tasks.concepts.run import REFERENCE_CONCEPTS, explain

    out = claim(args)
    encoder = load_model(args)
    concepts = args.concepts or REFERENCE_CONCEPTS
    r = explain(args.sae, args.weights, out, concepts, model_id=args.model, encoder=encoder)
    rows = [{"concept": m["word"], "latent": m["latent"], "cosine": m["cosine"],
             "weight": m["weight"] if not isinstance(m["weight"], list) else str(m["weight"]), "rank": m["rank"]}
            for m in r["matches"]]
    finish(out, {"task": "concepts explain", **r}, rows, encoder=encoder, random_init=encoder.random_init,
            inputs=[args.sae, args.weights])


def _intervene(args) -> None:
    from ..errors import PandermError
    from ..tasks.concepts.run import intervene_run

    if args.method == "matching" and not args.concept:
        raise PandermError("--method matching needs --concept TEXT (or use --method topk)")
    if args.method == "matching" and not args.model:
        raise PandermError("--method matching needs --model (its text tower matches --concept to the latents; "
                           "or use --method topk)")
    out = claim(args)
    encoder = load_model(args) if args.method == "matching" else None
    r = intervene_run(args.train_csv, args.test_csv, args.train_codes, args.test_codes, args.sae, out,
                      concept=args.concept, method=args.method, top_n=args.top_n, label_col=args.label_col,
                      random_state=args.random_state, alpha=args.alpha, model_id=args.model, encoder=encoder,
                      save_codes=args.save_codes)
    table = r.pop("table")
    print(f"zeroed latents {r['latents']}")
    finish(out, {"task": "concepts intervene", **r}, table.to_dict("records"), encoder=encoder,
            csv_files=[args.train_csv, args.test_csv], seed=args.random_state,
            random_init=bool(encoder is not None and encoder.random_init),
            inputs=[args.sae, args.train_codes, args.test_codes],
            model=None if encoder is not None else files_model(f"sae:{args.sae}", [args.sae]))


def register(sub, add_model_args=add_model_args) -> None:
    """Add ``panderm concepts {train-sae,activations,cbm,explain,intervene}`` to the subparsers ``sub``."""
    top = sub.add_parser("concepts", help="automated concept discovery: SAE, concept bottleneck model, interventions",
                         description="Automated concept discovery: sparse autoencoder, concept "
                         "bottleneck model, global explanation, intervention.", allow_abbrev=False)
    actions = top.add_subparsers(dest="concepts_action", required=True, metavar="ACTION")

    p = actions.add_parser("train-sae", help="train a sparse autoencoder on an embeddings .npy", formatter_class=_FMT,
                           allow_abbrev=False)
    p.add_argument("--embeddings", required=True, help="[N, D] float .npy (e.g. from `panderm features --normalize`)")
    p.add_argument("--expansion", type=int, default=8, help="latents = D * expansion")
    p.add_argument("--n-latents", type=int, default=None, help="number of latents (overrides --expansion)")
    p.add_argument("--k", type=int, default=None, help="TopK SAE with k active latents (default: ReLU + L1)")
    p.add_argument("--l1", type=float, default=3e-5, help="L1 sparsity penalty")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per batch")
    p.add_argument("--epochs", type=int, default=200, help="training epochs")
    p.add_argument("--resample-every", type=int, default=10, help="resample dead latents every N epochs (0: never, "
                                                                   "the reference)")
    p.add_argument("--max-resamples", type=_max_resamples, default=4, metavar="N|none",
                   help="resample at most N times (Anthropic's recipe: 4), so training settles afterwards")
    p.add_argument("--pre-bias-init", default="geometric_median", choices=["geometric_median", "mean", "zeros"],
                   help="initial tied pre-bias: the embeddings' geometric median or mean, or zeros (the reference)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--no-pth", action="store_true", help="skip the reference-layout autoencoder.pth")
    p.add_argument("--progress", action="store_true", help="one line per epoch on stderr")
    p.add_argument("--out", default="runs/concepts_sae", help="run folder (the SAE, codes, history, results.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_train_sae, door_flags=FLAGS)

    p = actions.add_parser("activations", aliases=["encode"], help="SAE codes of an embeddings .npy",
                           formatter_class=_FMT, allow_abbrev=False)
    p.add_argument("--sae", required=True, help="SAE folder (train-sae --out) or a reference autoencoder.pth")
    p.add_argument("--embeddings", required=True, help="required: embeddings .npy [N, D]")
    p.add_argument("--batch-size", type=int, default=512, help="rows per batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--out", default="runs/concepts_activations", help="run folder (activations.npy, results.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_activations, door_flags=FLAGS)

    p = actions.add_parser("cbm", help="L1 logistic-regression concept bottleneck model over SAE codes",
                           formatter_class=_FMT, allow_abbrev=False)
    p.add_argument("--csv", required=True, help="one row per embeddings row, same order")
    p.add_argument("--embeddings", required=True, help="[N, F] SAE codes (or raw embeddings)")
    p.add_argument("--label-col", default="label", help="CSV column holding the labels")
    p.add_argument("--split-col", default=None, help="train/test column: one given split instead of random splits")
    p.add_argument("--baseline", default=None, help="raw embeddings .npy: the same protocol as a baseline")
    p.add_argument("--n-splits", type=int, default=50, help="stratified 80/20 splits (seed+i each)")
    p.add_argument("--alpha", type=float, default=1e-3, help="L1 strength of the SGD classifier")
    p.add_argument("--seed", type=int, default=0, help="0 reproduces the reference's splits")
    p.add_argument("--out", default="runs/concepts_cbm", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_cbm, door_flags=FLAGS)

    p = actions.add_parser("explain", help="match concept words to CBM latents via the text encoder",
                           formatter_class=_FMT, allow_abbrev=False)
    add_model_args(p)
    p.add_argument("--sae", required=True, help="required: trained SAE folder (panderm concepts train-sae --out)")
    p.add_argument("--weights", required=True, help="CBM weights .npy (mean_classifier_weights.npy)")
    p.add_argument("--concepts", nargs="+", default=None, help="concept words (default: the reference's ten)")
    p.add_argument("--out", default="runs/concepts_explain", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_explain, door_flags=FLAGS)

    p = actions.add_parser("intervene", help="biased CBM on train codes; zero a concept's latents in the test codes",
                           formatter_class=_FMT, allow_abbrev=False)
    add_model_args(p, required=False)  # --method matching reads --concept with the model's text tower
    p.add_argument("--sae", required=True, help="required: trained SAE folder (panderm concepts train-sae --out)")
    p.add_argument("--train-csv", required=True, help="required: training CSV")
    p.add_argument("--test-csv", required=True, help="required: test CSV")
    p.add_argument("--train-codes", required=True, help="SAE codes of the train CSV rows")
    p.add_argument("--test-codes", required=True, help="SAE codes of the test CSV rows")
    p.add_argument("--label-col", default="label", help="CSV column holding the labels")
    p.add_argument("--concept", default=None, help="concept text, e.g. 'hair', 'purple ink', 'calibration scale'")
    p.add_argument("--method", default="matching", choices=["matching", "topk"],
                   help="matching: latents matched to --concept texts (needs --model); topk: the classifier's top-N "
                        "latents")
    p.add_argument("--top-n", type=int, default=5, help="number of latents intervened on")
    p.add_argument("--random-state", type=int, default=42, help="seed of the classifier")
    p.add_argument("--alpha", type=float, default=1e-3, help="regularisation strength of the classifier")
    p.add_argument("--save-codes", action="store_true", help="also write the intervened test codes")
    p.add_argument("--out", default="runs/concepts_intervene", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_intervene, door_flags=FLAGS)
    register_extra(actions, add_model_args)


def _retrieve(args) -> None:
    from ..tasks.concepts.retrieve import retrieve_run

    out = claim(args)
    encoder = load_model(args)
    r = retrieve_run(args.sae, args.codes, args.csv, args.text, out, image_col=args.image_col, root=args.root,
                     truth_col=args.truth_col, top_latents=args.top_latents, n_images=args.n_images,
                     model_id=args.model, encoder=encoder, allow_outside_root=args.allow_outside_root)
    rows = [{"text": x["text"], "latent": x["latent"], "cosine": x["cosine"], "images": len(x["images"]),
             "grid": x["grid"]} for x in r["results"]]
    finish(out, {"task": "concepts retrieve", **r}, rows, encoder=encoder, csv_files=[args.csv],
            random_init=encoder.random_init, inputs=[args.sae, args.codes])


def _report(args) -> None:
    from ..tasks.concepts.html_report import build_report
    from ..tasks.concepts.retrieve import load_vocabulary

    out = claim(args)
    encoder = load_model(args)
    vocab = load_vocabulary(args.vocabulary)
    s = build_report(args.sae, args.codes, args.csv, out, image_col=args.image_col, root=args.root,
                     weights_npy=args.weights, vocabulary=vocab, latents=args.latents, max_cards=args.max_cards,
                     n_images=args.n_images, title=args.title, model_id=args.model, encoder=encoder,
                     allow_outside_root=args.allow_outside_root)
    rows = [{"latent": c["latent"], "name": c["name"], "cosine": c["cosine"],
             "weight": c["weight"] if not isinstance(c["weight"], list) else str(c["weight"]),
             "fires_on": c["fires_on"]} for c in s["cards"][:20]]
    finish(out, {"task": "concepts report", **s}, rows, encoder=encoder, csv_files=[args.csv],
            random_init=encoder.random_init, inputs=[args.sae, args.codes])
    print(f"open {s['report']} in a browser")


def _common(p) -> None:
    p.add_argument("--sae", required=True, help="SAE folder (train-sae --out) or a reference autoencoder.pth")
    p.add_argument("--codes", required=True, help="[N, F] SAE codes of the CSV rows, same order")
    p.add_argument("--csv", required=True, help="the images the codes come from, one row each")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--n-images", type=int, default=5, help="top-activating images per latent")
    add_allow_absolute_paths(p)


def register_extra(sub, add_model_args=add_model_args) -> None:
    """Add ``retrieve`` and ``report`` to the ``panderm concepts`` action subparsers ``sub``."""
    p = sub.add_parser("retrieve", help="text -> most similar live SAE latent -> its top-activating images (PNG)",
                       formatter_class=_FMT, allow_abbrev=False)
    add_model_args(p)
    _common(p)
    p.add_argument("--text", nargs="+", required=True, help="concept text(s), e.g. 'dots and globules'")
    p.add_argument("--truth-col", default=None, help="0/1 (or absent/present) CSV column: title images Exists / "
                                                     "Non-Exists")
    p.add_argument("--top-latents", type=int, default=20, help="candidate latents listed per text")
    p.add_argument("--out", default="runs/concepts_retrieve", help="run folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_retrieve, door_flags=FLAGS)

    p = sub.add_parser("report", help="static HTML concept report: one card per latent (name, CBM weight, images)",
                       formatter_class=_FMT, allow_abbrev=False)
    add_model_args(p)
    _common(p)
    p.add_argument("--weights", default=None, help="CBM weights .npy (mean_classifier_weights.npy); selects and "
                                                   "orders the cards by |weight|")
    p.add_argument("--vocabulary", default=None, help="text file, one concept term per line (default: the built-in "
                                                      "dermatology vocabulary)")
    p.add_argument("--latents", type=int, nargs="+", default=None, help="show these latents (overrides selection)")
    p.add_argument("--max-cards", type=int, default=50, help="most latent cards in the report")
    p.add_argument("--title", default="SAE concept report", help="report title")
    p.add_argument("--out", default="runs/concepts_report", help="run folder (report.html)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=_report, door_flags=FLAGS)
