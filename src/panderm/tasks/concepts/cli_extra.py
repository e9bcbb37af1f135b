"""``panderm concepts retrieve`` and ``panderm concepts report`` (concept retrieval, latent naming, HTML report).

Handlers only map flags to :mod:`panderm.tasks.concepts.retrieve` / :mod:`panderm.tasks.concepts.html_report`,
print a short table and write ``results.json`` in the ``--out`` run folder.
"""
from __future__ import annotations

import argparse

_FMT = argparse.ArgumentDefaultsHelpFormatter


def _retrieve(args) -> None:
    from panderm.tasks.concepts.cli import _claim, _finish, _load_model
    from panderm.tasks.concepts.retrieve import retrieve_run

    out = _claim(args)
    encoder = _load_model(args)
    r = retrieve_run(args.sae, args.codes, args.csv, args.text, out, image_col=args.image_col, root=args.root,
                     truth_col=args.truth_col, top_latents=args.top_latents, n_images=args.n_images,
                     model_id=args.model, encoder=encoder, allow_outside_root=args.allow_outside_root)
    rows = [{"text": x["text"], "latent": x["latent"], "cosine": x["cosine"], "images": len(x["images"]),
             "grid": x["grid"]} for x in r["results"]]
    _finish(out, {"task": "concepts retrieve", **r}, rows, encoder=encoder, csv_files=[args.csv],
            random_init=encoder.random_init, inputs=[args.sae, args.codes])


def _report(args) -> None:
    from panderm.tasks.concepts.cli import _claim, _finish, _load_model
    from panderm.tasks.concepts.html_report import build_report
    from panderm.tasks.concepts.retrieve import load_vocabulary

    out = _claim(args)
    encoder = _load_model(args)
    vocab = load_vocabulary(args.vocabulary)
    s = build_report(args.sae, args.codes, args.csv, out, image_col=args.image_col, root=args.root,
                     weights_npy=args.weights, vocabulary=vocab, latents=args.latents, max_cards=args.max_cards,
                     n_images=args.n_images, title=args.title, model_id=args.model, encoder=encoder,
                     allow_outside_root=args.allow_outside_root)
    rows = [{"latent": c["latent"], "name": c["name"], "cosine": c["cosine"],
             "weight": c["weight"] if not isinstance(c["weight"], list) else str(c["weight"]),
             "fires_on": c["fires_on"]} for c in s["cards"][:20]]
    _finish(out, {"task": "concepts report", **s}, rows, encoder=encoder, csv_files=[args.csv],
            random_init=encoder.random_init, inputs=[args.sae, args.codes])
    print(f"open {s['report']} in a browser")


def _common(p) -> None:
    p.add_argument("--sae", required=True, help="SAE folder (train-sae --out) or a reference autoencoder.pth")
    p.add_argument("--codes", required=True, help="[N, F] SAE codes of the CSV rows, same order")
    p.add_argument("--csv", required=True, help="the images the codes come from, one row each")
    p.add_argument("--image-col", default="image_path", help="CSV column holding the image paths")
    p.add_argument("--root", default=None, help="folder image paths are relative to (default: the CSV's folder)")
    p.add_argument("--n-images", type=int, default=5, help="top-activating images per latent")
    from panderm.cli_support import add_allow_absolute_paths

    add_allow_absolute_paths(p)


def register_extra(sub, add_model_args) -> None:
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
    p.set_defaults(func=_retrieve)

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
    p.set_defaults(func=_report)
