"""Concept retrieval, latent naming, the HTML concept report, the 2_global door, and the whole chain on PH2.

The reference-format ``autoencoder.pth`` vs our safetensors format is covered by
``test_concepts_doors.py::test_train_sae_door_outputs`` (identical state dicts and codes) and
``test_concepts_sae.py::test_reads_reference_checkpoint``; the end-to-end test below re-checks it on real codes.
"""
import argparse
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import DataError
from panderm.tasks.concepts.html_report import render_html, select_latents
from panderm.tasks.concepts.retrieve import (
    CONCEPT_VOCABULARY,
    class_importance,
    live_latents,
    load_class_importance,
    load_vocabulary,
    name_latents,
    retrieve_concept,
    top_activating,
)

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO / "data" / "sample" / "ph2" / "ph2.csv"


class Cards(HTMLParser):
    """Collects card divs, img tags and the visible text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.cards, self.imgs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "card":
            self.cards.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Cards:
    p = Cards()
    p.feed(page)
    p.close()
    return p


# --------------------------------------------------------------------------------------------------------
# Core functions against direct computations
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(12, 8)).astype(np.float32)
    codes = np.abs(rng.normal(size=(30, 12))).astype(np.float32)
    codes[:, [2, 7]] = 0.0  # dead latents
    return dirs, codes, rng


def test_vocabulary():
    vocab = load_vocabulary()
    assert vocab == list(CONCEPT_VOCABULARY) and len(set(vocab)) == len(vocab) > 80
    for term in ("pigment network", "blue-whitish veil", "dots and globules", "streaks", "regression structures",
                 "dark brown", "blue-grey", "nodule", "plaque", "erosion"):
        assert term in vocab


def test_vocabulary_file(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# comment\nnodule\n\nplaque\nnodule\n")
    assert load_vocabulary(f) == ["nodule", "plaque"]
    f.write_text("# only a comment\n")
    with pytest.raises(DataError, match="no terms"):
        load_vocabulary(f)


def test_naming_is_argmax_cosine(toy):
    dirs, codes, rng = toy
    vocab = [f"w{i}" for i in range(9)]
    emb = rng.normal(size=(9, 8)).astype(np.float32)
    live = live_latents(codes)
    assert live.tolist() == [j not in (2, 7) for j in range(12)]
    names = name_latents(dirs, emb, vocab, live)
    d = dirs.astype(np.float64) / np.linalg.norm(dirs.astype(np.float64), axis=1, keepdims=True)
    t = emb.astype(np.float64) / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    cos = d @ t.T
    assert [n["latent"] for n in names] == [j for j in range(12) if j not in (2, 7)]
    for n in names:
        assert n["name"] == vocab[int(np.argmax(cos[n["latent"]]))]
        assert n["cosine"] == pytest.approx(cos[n["latent"]].max(), abs=1e-6)
        assert n["runner_up_cosine"] <= n["cosine"]


def test_retrieval_best_live_latent_and_its_top_rows(toy):
    dirs, codes, rng = toy
    text = dirs[7] + 0.01 * rng.normal(size=8)  # closest to a dead latent: must be skipped
    r = retrieve_concept(dirs, codes, text, top_latents=4, n_images=5, text="t")
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    cos = d @ (text / np.linalg.norm(text))
    assert int(np.argmax(cos)) == 7
    cos_live = np.where(live_latents(codes), cos, -np.inf)
    assert r["latent"] == int(np.argmax(cos_live)) and r["latent"] not in (2, 7)
    assert [c["latent"] for c in r["candidates"]] == list(np.argsort(-cos_live)[:4])
    expect = np.argsort(-codes[:, r["latent"]], kind="stable")[:5]
    assert [im["row"] for im in r["images"]] == expect.tolist()
    assert [im["activation"] for im in r["images"]] == pytest.approx(codes[expect, r["latent"]].tolist())


def test_top_activating_skips_zero_rows_and_checks():
    codes = np.zeros((6, 3), np.float32)
    codes[[1, 4], 0] = [2.0, 5.0]
    assert top_activating(codes, 0, 5) == [{"row": 4, "activation": 5.0}, {"row": 1, "activation": 2.0}]
    with pytest.raises(DataError, match="out of range"):
        top_activating(codes, 3)
    with pytest.raises(DataError, match="all latents dead"):
        retrieve_concept(np.eye(3, dtype=np.float32), np.zeros((4, 3), np.float32), [1.0, 0, 0])


def test_html_cards_escaped_and_parse():
    cards = [
        {"latent": 3, "name": "<script>alert('x')</script>", "cosine": 0.5, "weight": -1.25,
         "images": [{"src": "data:image/jpeg;base64,AAAA", "caption": 'a"b<c>.jpg'}]},
        {"latent": 9, "name": "dots & globules", "cosine": 0.1, "weight": [0.5, -0.5], "images": []},
    ]
    page = render_html(cards, title="T <&>", meta=["m <1>"], warning="RANDOM WEIGHTS <here>")
    assert "<script>" not in page and "&lt;script&gt;" in page and 'a&quot;b&lt;c&gt;.jpg' in page
    p = parse(page)
    assert p.cards == ["latent-3", "latent-9"] and p.imgs == ["data:image/jpeg;base64,AAAA"]
    text = "".join(p.text)
    assert "<script>alert('x')</script>" in text and "dots & globules" in text and "T <&>" in text


def test_select_latents():
    codes = np.array([[0, 1, 3, 0], [0, 2, 0, 0]], np.float32)
    assert select_latents(codes) == [1, 2]
    assert select_latents(codes, np.array([0.0, -2.0, 0.5, 1.0]), max_cards=2) == [1, 3]


def test_class_importance_function():
    rng = np.random.default_rng(1)
    X = rng.random((40, 16)).astype(np.float32)
    y = np.repeat([0, 1], 20)
    r = class_importance(X, y, topk=4)
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    for c in (0, 1):
        m = Xc[y == c].mean(0)
        idx = np.argsort(-np.abs(m), kind="stable")[:4]
        np.testing.assert_array_equal(r[str(c)]["top_indices"], idx)
        np.testing.assert_allclose(r[str(c)]["top_values"], m[idx], rtol=0, atol=1e-12)


def test_global_door_equals_numpy(tmp_path):
    ph2 = pd.read_csv(PH2)
    y = (ph2["diag"] == "melanoma").astype(int).to_numpy()
    csv = tmp_path / "m.csv"
    pd.DataFrame({"ImageID": ph2["image_id"], "diag": ph2["diag"], "melanoma": y}).to_csv(csv, index=False)
    rng = np.random.default_rng(2)
    X = np.maximum(rng.normal(size=(len(y), 24)), 0).astype(np.float32)
    X[:, 5] += 2.0 * y
    np.save(tmp_path / "codes.npy", X)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "automated-concept-discovery/2_global_concept_viz_binary-class.py"),
                           "--csv", str(csv), "--embeddings", str(tmp_path / "codes.npy"), "--topk", "3",
                           "--out_dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "label column: melanoma" in proc.stdout
    assert not list(out.glob("*.npy")) and not list(out.glob("*.pkl"))
    meta = json.loads((out / "class_importance.json").read_text())
    got = load_class_importance(out)
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    assert meta["classes"] == ["0", "1"] == list(got)
    for c in (0, 1):
        m = Xc[y == c].mean(0)
        idx = np.argsort(-np.abs(m), kind="stable")[:3]
        np.testing.assert_array_equal(got[str(c)]["top_indices"], idx)
        np.testing.assert_array_equal(meta["per_class"][str(c)]["top_indices"], idx)
        np.testing.assert_allclose(got[str(c)]["top_values"], m[idx], atol=1e-12)
        np.testing.assert_allclose(got[str(c)]["mean_activations"], m, atol=1e-12)
    assert int(got["1"]["top_indices"][0]) == 5
    bad = subprocess.run([sys.executable, str(REPO / "automated-concept-discovery/2_global_concept_viz_binary-class.py"),
                          "--csv", str(csv), "--embeddings", str(tmp_path / "missing.npy"), "--out_dir", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "not found" in bad.stderr


# --------------------------------------------------------------------------------------------------------
# End to end on the real PH2 images with the tiny open_clip model
# --------------------------------------------------------------------------------------------------------


def chain(model_id, encoder, tmp: Path) -> dict:
    """export → SAE → codes → CBM → explain → intervene → report + retrieve; returns what to compare."""
    from panderm.tasks.concepts.html_report import build_report
    from panderm.tasks.concepts.retrieve import retrieve_run
    from panderm.tasks.concepts.run import explain, extract_activations, intervene_run, run_cbm, train_sae_from_file
    from panderm.tasks.export import export_features

    ph2 = pd.read_csv(PH2)
    frame = pd.DataFrame({"image_path": ph2["image_path"], "split": ph2["split"],
                          "dots_globules": ph2["dots_globules"],
                          "melanoma": (ph2["diag"] == "melanoma").astype(int)})
    tmp.mkdir(parents=True)
    csv = tmp / "ph2_melanoma.csv"  # image paths stay relative to the PH2 folder (root=)
    frame.to_csv(csv, index=False)
    root = PH2.parent
    emb = export_features(model_id, csv, "image_path", tmp / "emb.npy", root=root, normalize=True, cache=False,
                          progress=False, batch_size=64, num_workers=0)
    X = np.load(tmp / "emb.npy")
    assert X.shape[0] == 200 and emb["n"] == 200
    sae = tmp / "sae"
    train_sae_from_file(tmp / "emb.npy", sae, dict(expansion=4, epochs=15, batch_size=32, l1=1e-4,
                                                   resample_every=5, seed=0))
    codes = tmp / "codes.npy"
    extract_activations(sae, tmp / "emb.npy", codes)
    extract_activations(sae / "autoencoder.pth", tmp / "emb.npy", tmp / "codes_ref.npy")
    np.testing.assert_array_equal(np.load(codes), np.load(tmp / "codes_ref.npy"))
    cbm = run_cbm(csv, codes, tmp / "cbm", label_col="melanoma", n_splits=5, alpha=1e-4, binary=True)
    weights = tmp / "cbm" / "mean_classifier_weights.npy"
    n_nonzero = int(np.count_nonzero(np.load(weights)))
    words = ["dots and globules", "blue-whitish veil", "black"][: max(1, min(3, n_nonzero))]
    ex = explain(sae, weights, tmp / "explain", words, encoder=encoder)
    C = np.load(codes)
    tr, te = (frame["split"] != "test").to_numpy(), (frame["split"] == "test").to_numpy()
    frame[tr].to_csv(tmp / "train.csv", index=False)
    frame[te].to_csv(tmp / "test.csv", index=False)
    np.save(tmp / "tr.npy", C[tr])
    np.save(tmp / "te.npy", C[te])
    iv = intervene_run(tmp / "train.csv", tmp / "test.csv", tmp / "tr.npy", tmp / "te.npy", sae, tmp / "iv",
                       concept="dark corner", top_n=2, label_col="melanoma", alpha=1e-4, encoder=encoder)
    rep = build_report(sae, codes, csv, tmp / "report", root=root, weights_npy=weights, max_cards=8, n_images=3,
                       encoder=encoder)
    ret = retrieve_run(sae, codes, csv, ["dots and globules", "blue-whitish veil"], tmp / "retrieve",
                       root=root, truth_col="dots_globules", n_images=5, encoder=encoder)
    return {"X": X, "cbm": cbm["table"], "weights": np.load(weights), "explain": ex["matches"],
            "intervene": (iv["before"], iv["after"], iv["latents"]), "report": rep, "retrieve": ret,
            "codes": C}


def test_end_to_end_on_ph2(tiny_openclip, tmp_path):
    from panderm.models import load_encoder

    model_id = f"local-dir:{tiny_openclip}"
    encoder = load_encoder(model_id)
    a = chain(model_id, encoder, tmp_path / "a")
    b = chain(model_id, encoder, tmp_path / "b")
    for sub, names in {
        "sae": ["sae.safetensors", "sae_config.json", "autoencoder.pth", "learned_activation.npy",
                "sae_history.jsonl", "sae_history.png", "sae_summary.json"],
        "cbm": ["mean_classifier_weights.npy", "mean_classifier_intercept.npy", "cbm_summary.csv"],
        "explain": ["concept_matches.json", "concept_matches.csv", "concept_weights.png"],
        "iv": ["intervention.csv", "intervention.json", "classifier_weights.npy"],
        "report": ["concept_report.html", "latent_names.csv", "latent_names.json", "concept_report.json"],
        "retrieve": ["retrieval.json", "retrieval_dots-and-globules.png", "retrieval_blue-whitish-veil.png"],
    }.items():
        for name in names:
            f = tmp_path / "a" / sub / name
            assert f.is_file() and f.stat().st_size > 0, f
    # Reproducible run to run: embeddings, codes, CBM numbers and weights, and everything downstream.
    np.testing.assert_array_equal(a["X"], b["X"])
    np.testing.assert_array_equal(a["codes"], b["codes"])
    pd.testing.assert_frame_equal(a["cbm"], b["cbm"])
    np.testing.assert_array_equal(a["weights"], b["weights"])
    assert a["explain"] == b["explain"] and a["intervene"] == b["intervene"]
    assert a["report"]["cards"] == b["report"]["cards"]
    # The report: one card per selected latent (non-zero weight by |weight|), names = the vocabulary argmax.
    page = (tmp_path / "a" / "report" / "concept_report.html").read_text()
    p = parse(page)
    w = a["weights"]
    expect = select_latents(a["codes"], w, 8)
    assert p.cards == [f"latent-{j}" for j in expect] and len(expect) > 0
    assert all(src.startswith("data:image/jpeg;base64,") for src in p.imgs) and p.imgs
    names = pd.read_csv(tmp_path / "a" / "report" / "latent_names.csv")
    assert len(names) == int(live_latents(a["codes"]).sum())
    assert set(names["name"]) <= set(CONCEPT_VOCABULARY)
    # Retrieval images are the top rows of the chosen latent, titled from the ground truth.
    r = a["retrieve"]["results"][0]
    col = a["codes"][:, r["latent"]]
    assert [im["row"] for im in r["images"]] == np.argsort(-col, kind="stable")[: len(r["images"])].tolist()
    truth = pd.read_csv(PH2)["dots_globules"].to_numpy()
    assert [im["exists"] for im in r["images"]] == [truth[im["row"]] != "absent" for im in r["images"]]


def test_cli_retrieve_and_report(tiny_openclip, tmp_path):
    """The `retrieve` / `report` sub-actions, on a parser of their own (cli.py wires them into `panderm concepts`)."""
    from panderm.cli import add_model_args
    from panderm.cli.concepts import register_extra
    from panderm.tasks.concepts.run import extract_activations, train_sae_from_file

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 32)).astype(np.float32)
    np.save(tmp_path / "emb.npy", X / np.linalg.norm(X, axis=1, keepdims=True))
    train_sae_from_file(tmp_path / "emb.npy", tmp_path / "sae", dict(expansion=2, epochs=2, batch_size=50))
    extract_activations(tmp_path / "sae", tmp_path / "emb.npy", tmp_path / "codes.npy")
    parser = argparse.ArgumentParser()
    register_extra(parser.add_subparsers(dest="action", required=True), add_model_args)
    model = f"local-dir:{tiny_openclip}"
    common = ["--model", model, "--sae", str(tmp_path / "sae"), "--codes", str(tmp_path / "codes.npy"),
              "--csv", str(PH2), "--n-images", "2"]
    args = parser.parse_args(["retrieve", *common, "--text", "streaks", "--out", str(tmp_path / "r")])
    args.func(args)
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["results"][0]["text"] == "streaks" and (tmp_path / "r" / "retrieval_streaks.png").is_file()
    args = parser.parse_args(["report", *common, "--max-cards", "3", "--out", str(tmp_path / "h")])
    args.func(args)
    assert len(parse((tmp_path / "h" / "concept_report.html").read_text()).cards) == 3
