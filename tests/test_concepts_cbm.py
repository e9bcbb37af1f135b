"""Concept bottleneck model: the protocol against scikit-learn, splits, explanation, intervention."""

import json

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split

from panderm.errors import DataError
from panderm.tasks.concepts.cbm import (
    evaluate_cbm,
    intervene,
    intervention_table,
    latents_for_text,
    match_concepts,
    plot_weights,
    save_cbm,
    select_intervention_latents,
    summary_table,
    top_concepts,
)


def codes(n=240, f=30, n_classes=2, seed=0):
    """Non-negative sparse-ish codes; latent 3 (and 5 for class 2) carries the label."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    X = np.maximum(rng.normal(size=(n, f)), 0).astype(np.float32)
    X[:, 3] += 1.2 * (y == 1)
    if n_classes > 2:
        X[:, 5] += 1.5 * (y == 2)
    return X, y


def direct_sklearn(X, y, n_splits, seed, multi_class=False):
    """The reference script's loop, written out with scikit-learn, seeded as documented."""
    rows = []
    for i in range(n_splits):
        rs = seed + i
        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, shuffle=True, stratify=y, random_state=rs)
        clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=0.001, random_state=rs).fit(X[tr], y[tr])
        p = clf.predict_proba(X[te])
        pred = clf.predict(X[te])
        auc = roc_auc_score(y[te], p, multi_class="ovr") if multi_class else roc_auc_score(y[te], p[:, 1])
        rows.append((auc, f1_score(y[te], pred, average="macro"), accuracy_score(y[te], pred), clf))
    return rows


@pytest.mark.parametrize("n_classes", [2, 3])
def test_metrics_equal_direct_sklearn(n_classes):
    X, y = codes(n_classes=n_classes)
    res = evaluate_cbm(X, y, n_splits=6, seed=3)
    ref = direct_sklearn(X, y, 6, 3, multi_class=n_classes > 2)
    assert [r["random_state"] for r in res["per_split"]] == list(range(3, 9))
    for got, (auc, f1, acc, clf) in zip(res["per_split"], ref):
        assert got["auroc"] == pytest.approx(auc, abs=1e-12)
        assert got["macro_f1"] == pytest.approx(f1, abs=1e-12)
        assert got["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert got["n_nonzero"] == np.count_nonzero(np.any(clf.coef_ != 0, axis=0))
    assert res["summary"]["auroc"]["mean"] == pytest.approx(np.mean([r[0] for r in ref]), abs=1e-12)
    assert res["summary"]["auroc"]["std"] == pytest.approx(np.std([r[0] for r in ref]), abs=1e-12)
    assert res["summary"]["macro_f1"]["mean"] == pytest.approx(np.mean([r[1] for r in ref]), abs=1e-12)
    mean = lambda attr: np.mean([getattr(r[3], attr) for r in ref], axis=0, dtype=np.float64)  # noqa: E731
    np.testing.assert_allclose(res["coef_mean"], mean("coef_"), atol=1e-12)
    np.testing.assert_allclose(res["intercept_mean"], mean("intercept_"), atol=1e-12)
    assert res["coef_mean"].shape == ((1, 30) if n_classes == 2 else (3, 30))
    assert res["summary"]["auroc"]["mean"] > 0.75  # the planted signal is found


def test_reproducible_and_seed_matters():
    X, y = codes()
    a, b = evaluate_cbm(X, y, n_splits=4), evaluate_cbm(X, y, n_splits=4)
    assert a["per_split"] == b["per_split"]
    np.testing.assert_array_equal(a["coef_mean"], b["coef_mean"])
    c = evaluate_cbm(X, y, n_splits=4, seed=100)
    assert [r["auroc"] for r in c["per_split"]] != [r["auroc"] for r in a["per_split"]]


def test_given_split_and_string_labels():
    X, y = codes(n=200)
    labels = np.where(y == 1, "melanoma", "nevus")
    split = np.array(["train"] * 120 + ["val"] * 20 + ["TEST"] * 60)
    res = evaluate_cbm(X, labels, split=split, seed=42)
    assert res["protocol"] == "given_split" and res["n_splits"] == 1
    assert res["classes"] == ["melanoma", "nevus"]
    (row,) = res["per_split"]
    assert (row["n_train"], row["n_test"], row["random_state"]) == (120, 60, 42)
    code = (labels == "nevus").astype(int)  # sorted classes: melanoma = 0, nevus = 1
    clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=0.001, random_state=42).fit(X[:120], code[:120])
    assert row["auroc"] == pytest.approx(roc_auc_score(code[140:], clf.predict_proba(X[140:])[:, 1]), abs=1e-12)
    np.testing.assert_allclose(res["coef_mean"], clf.coef_, atol=1e-12)


def test_baseline_uses_the_same_splits():
    X, y = codes()
    raw = np.random.default_rng(1).normal(size=(len(y), 8)).astype(np.float32)
    cbm, base = evaluate_cbm(X, y, n_splits=3), evaluate_cbm(raw, y, n_splits=3)
    keys = ("random_state", "n_train", "n_test")
    assert [[r[k] for k in keys] for r in cbm["per_split"]] == [[r[k] for k in keys] for r in base["per_split"]]
    table = summary_table({"SAE codes": cbm, "raw embeddings": base})
    assert list(table["features"]) == ["SAE codes", "raw embeddings"]
    assert table.loc[0, "auroc_mean"] == cbm["summary"]["auroc"]["mean"]
    assert list(table["n_features"]) == [30, 8]


def test_save_cbm(tmp_path):
    X, y = codes()
    res = evaluate_cbm(X, y, n_splits=2)
    paths = save_cbm(res, tmp_path)
    w = np.load(paths["weights"])
    assert w.shape == (30,)  # binary: coef_[0], as the reference saves it
    np.testing.assert_array_equal(w, res["coef_mean"][0])
    assert np.load(paths["intercept"]).shape == (1,)
    meta = json.loads(paths["metrics"].read_text())
    assert meta["summary"]["auroc"]["mean"] == pytest.approx(res["summary"]["auroc"]["mean"])
    assert len(paths["splits"].read_text().splitlines()) == 3


# ---------------------------------------------------------------------------------------------- explanation


def test_top_concepts():
    binary = top_concepts(np.array([0.0, 2.0, -3.0, 0.5, 0.0, -0.1]), k=2, classes=["benign", "malignant"])
    assert binary == [
        {"class": "benign", "latents": [2, 5], "weights": [-3.0, -0.1]},
        {"class": "malignant", "latents": [1, 3], "weights": [2.0, 0.5]},
    ]
    multi = top_concepts(np.array([[1.0, 0.0, 3.0], [0.0, -1.0, 0.0], [0.2, 0.4, 0.1]]), k=5)
    assert [m["latents"] for m in multi] == [[2, 0], [], [1, 0, 2]]


def test_hungarian_matching_beats_greedy():
    dirs = np.eye(6)  # latent j points along axis j
    words = np.array([
        [0.60, 0.55, 0, 0, np.sqrt(1 - 0.36 - 0.3025), 0],
        [0.58, 0.05, 0, 0, 0, np.sqrt(1 - 0.3364 - 0.0025)],
    ])
    # Greedy would give both words latent 0; the 1-to-1 optimum is word0→1, word1→0 (0.55 + 0.58 > 0.60 + 0.05).
    got = match_concepts(dirs, words, candidate_latents=[0, 1, 2, 3], words=["irregular", "black"])
    assert [(m["word"], m["latent"]) for m in got] == [("irregular", 1), ("black", 0)]
    assert [m["cosine"] for m in got] == pytest.approx([0.55, 0.58])
    # candidates matter: with every latent allowed, word1 takes its private axis 5 (0.60 + 0.815 is best)
    mask = np.ones(6, dtype=bool)
    assert [m["latent"] for m in match_concepts(dirs * 3.0, words, mask)] == [0, 5]  # scale-free (cosine)
    with pytest.raises(DataError, match="candidate"):
        match_concepts(dirs, words, candidate_latents=[0])


def test_text_matching_equals_repeated_hungarian():
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(40, 8))
    text = rng.normal(size=8)
    cand = rng.random(40) < 0.5
    top = latents_for_text(dirs, text, cand, top_n=5)
    hungarian = match_concepts(dirs, np.tile(text, (5, 1)), cand)
    assert {t["latent"] for t in top} == {h["latent"] for h in hungarian}
    assert all(cand[t["latent"]] for t in top)
    assert [t["cosine"] for t in top] == sorted((t["cosine"] for t in top), reverse=True)


def test_plot_weights(tmp_path):
    png = plot_weights(["black (#12)", "white (#3)"], [1.5, -0.7], tmp_path / "w.png", title="matched")
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- intervention


def biased_data(reverse_in_test: bool, n=600, seed=0):
    """Latent 0 is a weak genuine lesion feature; latent 1 a spurious artefact ("hair").

    In train the artefact comes with class 1 90% of the time; in test it comes with class 1 10% of the time
    (``reverse_in_test``, the ISIC bias sets) or keeps the train correlation.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    split = np.where(np.arange(n) < 400, "train", "test")
    X = np.maximum(rng.normal(scale=0.5, size=(n, 12)), 0).astype(np.float32)
    X[:, 0] += 0.3 * y
    p_train = np.where(y == 1, 0.9, 0.1)
    p = np.where(split == "test", 1 - p_train, p_train) if reverse_in_test else p_train
    X[:, 1] = 1.0 * (rng.random(n) < p)
    return X, y, split


@pytest.mark.parametrize("reverse", [True, False])
def test_intervention_on_spurious_latent(reverse):
    X, y, split = biased_data(reverse)
    before = evaluate_cbm(X, y, split=split, seed=42, return_models=True)
    chosen = select_intervention_latents(before["coef_mean"], method="topk", top_n=1)
    assert chosen == [1]  # the artefact carries the largest weight
    # matching: the latent whose dictionary direction is closest to the "hair" text, among non-zero weights
    dirs = np.eye(12)[:, :8] + 0.01
    hair = dirs[1] + 0.05 * dirs[4]
    assert select_intervention_latents(before["coef_mean"], "matching", 1, dirs, hair) == [1]

    after = evaluate_cbm(X, y, split=split, seed=42, eval_features=intervene(X, chosen), return_models=True)
    np.testing.assert_array_equal(after["coef_mean"], before["coef_mean"])  # the same classifier
    table = intervention_table(before, after)
    auroc = table.set_index("metric").loc["auroc"]
    assert auroc["change"] == pytest.approx(auroc["after"] - auroc["before"])
    if reverse:  # the shortcut hurt on the shifted test set; removing it helps
        assert auroc["after"] > auroc["before"] + 0.15
    else:  # the shortcut still worked on test; removing it costs accuracy
        assert auroc["after"] < auroc["before"] - 0.1


def test_intervene_copies_and_zeroes():
    X = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    out = intervene(X, [1, 3])
    assert out.dtype == np.float32
    assert np.all(out[:, [1, 3]] == 0) and np.array_equal(out[:, [0, 2]], X[:, [0, 2]])
    assert np.all(X[:, 1] != 0)  # input untouched


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.zeros(240)}, "single class"),
        ({"labels": np.arange(10) % 2}, "10 entries"),
        ({"features": np.full((240, 3), np.nan)}, "non-finite"),
        ({"split": np.array(["train"] * 240)}, "'test'"),
        ({"labels": np.r_[np.zeros(239), 1]}, "stratified"),
        ({"eval_features": np.zeros((240, 5))}, "shape"),
        ({"n_splits": 0}, "n_splits"),
    ],
)
def test_bad_cbm_inputs(kwargs, message):
    X, y = codes()
    args = {"features": X, "labels": y, "n_splits": 2}
    args.update(kwargs)
    with pytest.raises(DataError, match=message):
        evaluate_cbm(**args)


def test_bad_intervention_inputs():
    with pytest.raises(DataError, match="lie in"):
        intervene(np.zeros((2, 3)), [3])
    with pytest.raises(DataError, match="method"):
        select_intervention_latents(np.ones(3), method="random")
    with pytest.raises(DataError, match="needs"):
        select_intervention_latents(np.ones(3), method="matching")
