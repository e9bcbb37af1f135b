"""Concept-discovery doors (automated-concept-discovery/*.py) and `panderm concepts`, end to end.

Doors run as subprocesses from the repo root; their outputs are checked against direct library / sklearn calls
on the same arrays. Labels come from the bundled PH2 sample (melanoma vs rest); embeddings are synthetic.
"""
import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score

from panderm.tasks.concepts.cbm import evaluate_cbm
from panderm.tasks.concepts.cbm import match_concepts
from panderm.tasks.concepts.sae import SparseAutoencoder, decoder_directions, load_sae, sae_activations

REPO = Path(__file__).resolve().parents[1]
DOORS = REPO / "automated-concept-discovery"
PH2 = REPO / "data" / "sample" / "ph2" / "ph2.csv"
D = 32  # the tiny open_clip model's embedding width
EXPANSION = 2
F = D * EXPANSION


def door(name, *args):
    return subprocess.run([sys.executable, str(DOORS / name), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)  # hang guard only


def assert_clean_error(proc, *words):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error:" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def printed(stdout, label):
    return float(next(line for line in stdout.splitlines() if line.startswith(label)).split(":")[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """PH2 rows as a reference-style CSV (third column = melanoma 0/1) and planted embeddings [200, 32]."""
    tmp = tmp_path_factory.mktemp("concepts")
    ph2 = pd.read_csv(PH2)
    y = (ph2["diag"] == "melanoma").astype(int).to_numpy()
    frame = pd.DataFrame({"ImageID": ph2["image_id"], "diag": ph2["diag"], "melanoma": y, "split": ph2["split"]})
    csv = tmp / "ph2_melanoma.csv"
    frame.to_csv(csv, index=False)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(y), D)).astype(np.float32)
    X[:, 0] += 1.5 * y
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    save_dir = tmp / "sae_run" / "nested"  # no trailing slash, does not exist yet
    save_dir.mkdir(parents=True)
    np.save(save_dir / "all_embeddings.npy", X)
    return {"tmp": tmp, "csv": csv, "y": y, "X": X, "save_dir": save_dir, "frame": frame}


@pytest.fixture(scope="module")
def sae_dir(data):
    proc = door("train_sae.py", "--save_dir", data["save_dir"], "--expansion", EXPANSION, "--epochs", 3,
                "--batch_size", 64, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return data["save_dir"]


def test_train_sae_door_outputs(data, sae_dir):
    X = data["X"]
    for name in ("autoencoder.pth", "learned_activation.npy", "sae.safetensors", "sae_config.json",
                 "sae_history.jsonl", "sae_history.png", "sae_summary.json"):
        assert (sae_dir / name).is_file(), name
    cfg = json.loads((sae_dir / "sae_config.json").read_text())["config"]
    assert cfg["resample_every"] == 0 and cfg["epochs"] == 3 and cfg["expansion"] == EXPANSION
    assert cfg["pre_bias_init"] == "zeros"  # the reference's recipe, not the library's default
    assert len((sae_dir / "sae_history.jsonl").read_text().splitlines()) == 3
    # The .pth is the reference layout, tensors only.
    obj = torch.load(sae_dir / "autoencoder.pth", weights_only=True)
    st = obj["model_state_dict"]
    assert obj["model_config"] == {"n_input_features": D, "n_learned_features": F, "n_components": 1}
    assert obj["train_shape"] == [len(X), D]
    assert st["tied_bias"].shape == (1, D) and st["encoder._weight"].shape == (1, F, D)
    assert st["encoder._bias"].shape == (1, F) and st["decoder._weight"].shape == (1, D, F)
    ours, _ = load_sae(sae_dir / "sae.safetensors")
    ref, _ = load_sae(sae_dir / "autoencoder.pth")
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    codes = np.load(sae_dir / "learned_activation.npy", allow_pickle=False)
    assert codes.dtype == np.float32 and codes.shape == (len(X), F)
    np.testing.assert_array_equal(codes, sae_activations(ours, X))


def test_extract_door_matches_library(data, sae_dir, tmp_path):
    out = tmp_path / "codes.npy"
    proc = door("0_extract_sae_activations.py", "--checkpoint", sae_dir / "autoencoder.pth", "--embeddings",
                sae_dir / "all_embeddings.npy", "--output", out, "--batch_size", 37)
    assert proc.returncode == 0, proc.stderr
    codes = np.load(out, allow_pickle=False)
    model, _ = load_sae(sae_dir)
    expected = sae_activations(model, data["X"])
    assert codes.dtype == np.float32 and codes.shape == (len(data["X"]), F)
    np.testing.assert_array_equal(codes, expected)
    assert f"{int((expected > 0).any(0).sum())} / {F}" in proc.stdout


def test_train_clf_door_equals_evaluate_cbm(data, sae_dir, tmp_path):
    codes = sae_dir / "learned_activation.npy"
    proc = door("1_train_clf_binary-class.py", "--csv", data["csv"], "--embeddings", codes, "--output",
                tmp_path / "cbm", "--n_splits", 4)
    assert proc.returncode == 0, proc.stderr
    assert "label column: melanoma" in proc.stdout  # the third column, as the reference takes it
    direct = evaluate_cbm(np.load(codes), data["y"], n_splits=4)
    assert printed(proc.stdout, "Mean ROC-AUC") == round(direct["summary"]["auroc"]["mean"], 3)
    assert printed(proc.stdout, "Mean F1") == round(direct["summary"]["macro_f1"]["mean"], 3)
    w = np.load(tmp_path / "cbm" / "mean_classifier_weights.npy", allow_pickle=False)
    b = np.load(tmp_path / "cbm" / "mean_classifier_intercept.npy", allow_pickle=False)
    assert w.shape == (F,) and b.shape == (1,)
    np.testing.assert_array_equal(w, direct["coef_mean"][0])
    np.testing.assert_array_equal(b, direct["intercept_mean"])


def _clf_error_cases(data, tmp):
    bad_pickle = tmp / "pickled.npy"
    np.save(bad_pickle, np.array([{"a": 1}] * len(data["y"]), dtype=object), allow_pickle=True)
    short = tmp / "short.npy"
    np.save(short, data["X"][:-3])
    base = ["--csv", data["csv"]]
    return [
        (["--embeddings", bad_pickle], ["pickled.npy", "pickled"]),
        (["--embeddings", data["csv"]], [str(Path(data["csv"]).name), "not a .npy file"]),  # not "pickled"
        (["--embeddings", short], ["short.npy", "197 rows", "200"]),
        (["--embeddings", data["save_dir"] / "all_embeddings.npy", "--label_col", "hair"], ["'hair'", "--label_col"]),
    ], base


def test_clf_door_bad_inputs(data, tmp_path):
    cases, base = _clf_error_cases(data, tmp_path)
    with ThreadPoolExecutor(len(cases)) as pool:
        procs = list(pool.map(lambda c: door("1_train_clf_binary-class.py", *base, *c[0], "--output",
                                             tmp_path / f"out{cases.index(c)}"), cases))
    for (_, words), proc in zip(cases, procs):
        assert_clean_error(proc, *words)
    assert not any(tmp_path.glob("out*")), "no output on bad input"


def test_extract_door_width_mismatch(data, sae_dir, tmp_path):
    wrong = tmp_path / "wide.npy"
    np.save(wrong, np.ones((5, D + 1), np.float32))
    out = tmp_path / "codes.npy"
    proc = door("0_extract_sae_activations.py", "--checkpoint", sae_dir, "--embeddings", wrong, "--output", out)
    assert_clean_error(proc, "wide.npy", f"(5, {D + 1})", str(D))
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------
# Biased CBM + intervention on a planted case
# ------------------------------------------------------------------------------------------------------------


def planted_codes(y, rng, spurious=5, signal=9):
    """Non-negative codes [N, F]: latent `spurious` carries the label strongly, latent `signal` weakly."""
    X = np.abs(rng.normal(scale=0.1, size=(len(y), F))).astype(np.float32)
    X[:, spurious] += 2.0 * y + np.abs(rng.normal(scale=0.2, size=len(y)))
    X[:, signal] += 0.4 * y + np.abs(rng.normal(scale=0.3, size=len(y)))
    return X


@pytest.fixture(scope="module")
def biased(data):
    tmp = data["tmp"] / "biased"
    tmp.mkdir()
    frame = data["frame"]
    rng = np.random.default_rng(1)
    out = {}
    for split in ("train", "test"):
        part = frame[frame["split"] == split][["ImageID", "diag", "melanoma"]]  # label = last column
        part.to_csv(tmp / f"{split}.csv", index=False)
        y = part["melanoma"].to_numpy()
        X = planted_codes(y, rng)
        (tmp / split).mkdir()
        np.save(tmp / split / "learned_activation.npy", X)
        out[split] = (X, y)
    return tmp, out


def test_biased_cbm_and_topk_intervention_doors(biased, sae_dir):
    root, arrays = biased
    (X_tr, y_tr), (X_te, y_te) = arrays["train"], arrays["test"]
    args = ["--train_csv", root / "train.csv", "--test_csv", root / "test.csv",
            "--train_embeddings", root / "train" / "learned_activation.npy"]
    proc = door("3_train_biased-cbm_binary-class.py", *args, "--test_embeddings",
                root / "test" / "learned_activation.npy", "--output", root / "before-intervention")
    assert proc.returncode == 0, proc.stderr
    clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=0.001, random_state=42).fit(X_tr, y_tr)
    auc_before = roc_auc_score(y_te, clf.predict_proba(X_te)[:, 1])
    assert printed(proc.stdout, "ROC-AUC") == round(auc_before, 3)
    w = np.load(root / "before-intervention" / "classifier_weights.npy", allow_pickle=False)
    np.testing.assert_array_equal(w, clf.coef_[0])
    assert int(np.argmax(np.abs(w))) == 5  # the planted spurious latent dominates

    proc = door("4_intervention_CBM.py", "--method", "topk", "--top_n", 1, "--sae_checkpoint",
                sae_dir / "autoencoder.pth", "--result_dir", root)
    assert proc.returncode == 0, proc.stderr
    edited_path = root / "test" / "learned_activation_after_intervention.npy"
    edited = np.load(edited_path, allow_pickle=False)
    assert json.loads(edited_path.with_suffix(".json").read_text())["latents"] == [5]
    expected = X_te.copy()
    expected[:, 5] = 0
    np.testing.assert_array_equal(edited, expected)

    proc = door("3_train_biased-cbm_binary-class.py", *args, "--test_embeddings", edited_path)
    assert proc.returncode == 0, proc.stderr
    auc_after = roc_auc_score(y_te, clf.predict_proba(expected)[:, 1])
    assert printed(proc.stdout, "ROC-AUC") == round(auc_after, 3)
    assert auc_after < auc_before - 0.1


# ------------------------------------------------------------------------------------------------------------
# Text-encoder steps (explain, matching intervention) through `panderm concepts`, in-process
# ------------------------------------------------------------------------------------------------------------


def cli(*argv):
    from panderm.cli import add_model_args
    from panderm.cli.concepts import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub, add_model_args)
    args = parser.parse_args(["concepts", *map(str, argv)])
    args.func(args)


@pytest.fixture(scope="module")
def text(tiny_openclip):
    from panderm.features import extract_text_features
    from panderm.models import load_encoder

    model_id = f"local-dir:{tiny_openclip}"
    encoder = load_encoder(model_id)

    def encode(words):
        t = extract_text_features(encoder, words, cache=False)
        return t / np.linalg.norm(t, axis=1, keepdims=True)

    return model_id, encode


@pytest.fixture(scope="module")
def hair_sae(data, text):
    """An SAE whose dictionary direction 5 is the text embedding of 'hair' (reference .pth layout)."""
    from panderm.tasks.concepts.run import write_reference_pth

    torch.manual_seed(0)
    model = SparseAutoencoder(D, F)
    with torch.no_grad():
        model.decoder.weight[:, 5] = torch.from_numpy(text[1](["hair"])[0])
    model.normalize_decoder_()
    return write_reference_pth(model, data["tmp"] / "hair_sae" / "autoencoder.pth")


def test_cli_intervene_matching_planted(biased, hair_sae, text, tmp_path):
    root, arrays = biased
    (X_tr, y_tr), (X_te, y_te) = arrays["train"], arrays["test"]
    out = tmp_path / "run"
    cli("intervene", "--model", text[0], "--sae", hair_sae, "--train-csv", root / "train.csv", "--test-csv",
        root / "test.csv", "--train-codes", root / "train" / "learned_activation.npy", "--test-codes",
        root / "test" / "learned_activation.npy", "--label-col", "melanoma", "--concept", "hair", "--top-n", 1,
        "--out", out)
    info = json.loads((out / "intervention.json").read_text())
    assert info["latents"] == [5] and info["cosines"][0] == pytest.approx(1.0, abs=1e-5)
    clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=0.001, random_state=42).fit(X_tr, y_tr)
    edited = X_te.copy()
    edited[:, 5] = 0
    table = pd.read_csv(out / "intervention.csv").set_index("metric")
    assert table.loc["auroc", "before"] == pytest.approx(roc_auc_score(y_te, clf.predict_proba(X_te)[:, 1]), abs=1e-12)
    assert table.loc["auroc", "after"] == pytest.approx(roc_auc_score(y_te, clf.predict_proba(edited)[:, 1]), abs=1e-12)
    assert table.loc["auroc", "change"] < -0.1
    assert (out / "results.json").is_file()


def test_cli_explain_equals_match_concepts(data, sae_dir, text, tmp_path):
    rng = np.random.default_rng(3)
    w = np.where(rng.random(F) < 0.5, rng.normal(size=F), 0.0)
    weights = tmp_path / "w.npy"
    np.save(weights, w)
    words = ["hair", "blue", "irregular", "brown"]
    out = tmp_path / "explain"
    cli("explain", "--model", text[0], "--sae", sae_dir, "--weights", weights, "--concepts", *words, "--out", out)
    got = json.loads((out / "concept_matches.json").read_text())["matches"]
    model, _ = load_sae(sae_dir)
    direct = match_concepts(decoder_directions(model), text[1](words), w != 0, words=words)
    assert [(m["word"], m["latent"]) for m in got] == [(m["word"], m["latent"]) for m in direct]
    for g, m in zip(got, direct):
        assert g["cosine"] == pytest.approx(m["cosine"], abs=1e-5)
        assert g["weight"] == w[m["latent"]]
    assert (out / "concept_weights.png").stat().st_size > 0 and (out / "results.json").is_file()


def test_cli_explain_defaults_with_fewer_weights_than_concepts(data, sae_dir, text, tmp_path, caplog):
    """Issue 18 item 5: with its defaults (the reference's ten concepts) explain stopped on "5 non-zero weights but
    10 concepts were given". Like the reference's linear_sum_assignment, the 5 latents get the 5 concepts with the
    largest total cosine; the other 5 are listed as unmatched, with one warning line naming the way out."""
    from panderm.errors import DataError
    from panderm.tasks.concepts.run import REFERENCE_CONCEPTS

    w = np.zeros(F)
    w[[3, 11, 20, 41, 60]] = [0.5, -1.0, 2.0, 0.1, -0.3]
    weights = tmp_path / "w.npy"
    np.save(weights, w)
    out = tmp_path / "explain"
    with caplog.at_level("WARNING"):
        cli("explain", "--model", text[0], "--sae", sae_dir, "--weights", weights, "--out", out)
    got = json.loads((out / "concept_matches.json").read_text())
    model, _ = load_sae(sae_dir)
    emb = text[1](REFERENCE_CONCEPTS)
    assert sorted(m["latent"] for m in got["matches"]) == [3, 11, 20, 41, 60]
    # The same as the reference's Hungarian matching on the rectangular (10 x 5) similarity matrix.
    from scipy.optimize import linear_sum_assignment

    dirs = decoder_directions(model)[[3, 11, 20, 41, 60]]
    sim = emb @ (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).T
    rows, cols = linear_sum_assignment(-sim)
    assert [(m["word"], m["latent"]) for m in got["matches"]] == [
        (REFERENCE_CONCEPTS[r], [3, 11, 20, 41, 60][c]) for r, c in zip(rows, cols)]
    assert sorted(got["unmatched"]) == sorted(set(REFERENCE_CONCEPTS) - {m["word"] for m in got["matches"]})
    lines = [r.getMessage() for r in caplog.records if "non-zero weight" in r.getMessage()]
    assert len(lines) == 1 and "smaller alpha" in lines[0] and "fewer concepts" in lines[0], lines
    # No non-zero weight at all: one line naming the way out.
    np.save(weights, np.zeros(F))
    with pytest.raises(DataError, match=r"no non-zero weight.*smaller alpha"):
        cli("explain", "--model", text[0], "--sae", sae_dir, "--weights", weights, "--out", tmp_path / "e2")


def test_cli_train_sae_and_cbm_with_split_and_baseline(data, tmp_path):
    emb = data["save_dir"] / "all_embeddings.npy"
    cli("train-sae", "--embeddings", emb, "--expansion", 2, "--epochs", 4, "--batch-size", 50,
        "--resample-every", 2, "--out", tmp_path / "sae")
    res = json.loads((tmp_path / "sae" / "results.json").read_text())
    assert res["config"]["resample_every"] == 2 and len(res["files"]) >= 5
    cli("activations", "--sae", tmp_path / "sae", "--embeddings", emb, "--out", tmp_path / "act")
    codes = np.load(tmp_path / "act" / "activations.npy", allow_pickle=False)
    np.testing.assert_array_equal(codes, np.load(tmp_path / "sae" / "learned_activation.npy"))
    cli("cbm", "--csv", data["csv"], "--embeddings", tmp_path / "act" / "activations.npy", "--label-col", "diag",
        "--split-col", "split", "--baseline", emb, "--out", tmp_path / "cbm")
    res = json.loads((tmp_path / "cbm" / "results.json").read_text())
    split = data["frame"]["split"].to_numpy()
    direct = evaluate_cbm(codes, data["frame"]["diag"].to_numpy(), split=split)
    assert res["results"]["features"]["protocol"] == "given_split"
    assert res["results"]["features"]["summary"]["auroc"]["mean"] == pytest.approx(
        direct["summary"]["auroc"]["mean"], abs=1e-12)
    assert res["results"]["features"]["classes"] == ["atypical nevus", "common nevus", "melanoma"]
    assert (tmp_path / "cbm" / "baseline_mean_classifier_weights.npy").is_file()
