"""The Python API's dataset-level methods, each checked against an independent computation on real images."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from panderm import PanDerm2
from panderm.errors import DataError, PandermError
from panderm.tasks.linear_probe import CONVERGED_TOL, LogisticRegressionProbe

REPO = Path(__file__).resolve().parents[1]
HAM = REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv"
PH2 = REPO / "data" / "sample" / "ph2" / "ph2.csv"
HAM_CLASSES = ["melanoma", "melanocytic nevus", "basal cell carcinoma", "actinic keratosis", "benign keratosis",
               "dermatofibroma", "vascular lesion"]


@pytest.fixture(scope="module")
def model(tiny_openclip):
    return PanDerm2.from_pretrained(f"local-dir:{tiny_openclip}")


def _images(csv):
    frame = pd.read_csv(csv)
    return frame, [str(csv.parent / p) for p in frame["image_path"]]


def test_evaluate_zero_shot_equals_per_image_classification(model):
    frame, paths = _images(HAM)
    res = model.evaluate_zero_shot(HAM, HAM_CLASSES, n_bootstrap=50, cache=False)
    per_image = model.zero_shot_classify(paths, HAM_CLASSES)
    probs = np.array([[row[c] for c in HAM_CLASSES] for row in per_image])
    np.testing.assert_allclose(res["probs"], probs, atol=1e-5)
    pred = probs.argmax(1)
    assert res["n"] == 70 and res["metrics"]["accuracy"] == pytest.approx(accuracy_score(frame["label"], pred))
    assert res["metrics"]["weighted_f1"] == pytest.approx(f1_score(frame["label"], pred, average="weighted"))
    ci = res["ci"]["accuracy"]
    assert ci["ci_low"] <= res["metrics"]["accuracy"] <= ci["ci_high"]


def test_evaluate_zero_shot_needs_exactly_one_source(model):
    with pytest.raises(PandermError, match="classnames must be a list of strings"):
        model.zero_shot_classify(str(HAM.parent / "images" / "ISIC_0025248.jpg"), "melanoma,nevus")
    with pytest.raises(PandermError, match="templates must be a list"):
        model.evaluate_zero_shot(HAM, HAM_CLASSES, templates="a photo of {c}")
    with pytest.raises(PandermError, match="either a csv"):
        model.evaluate_zero_shot()
    with pytest.raises(DataError, match="class"):
        model.evaluate_zero_shot(HAM, HAM_CLASSES[:3])


def test_linear_probe_equals_a_probe_fitted_on_the_api_features(model):
    """The API's probe is fitted on the API's features (same rows, same kind, same order).

    Compared where the answer is stable. The float32 L-BFGS stops where the loss stops changing, which locates the
    optimum only to ~3e-4 in probability: a 1e-6 relative change of the features (another BLAS summation order)
    moves the probabilities that much (measured), so they are not compared. The loss at the optimum (first-order
    insensitive: it moved by < 1e-6 relative) and the predictions are. C = 10 keeps the case well-conditioned:
    at the default C (D·K/100 = 2.24) the tiny random-weight model's features are uninformative, the optimum is
    W = 0 (the unsquared-norm penalty's kink), every probability is 1/7 ± 1e-3 and the predictions are noise.
    """
    frame, paths = _images(HAM)
    res = model.linear_probe(HAM, n_bootstrap=0, cache=False, C=10.0)
    assert (res["kind"], res["normalized"]) == ("embed", False)  # stock open_clip: projected, unnormalised
    feats = model.encode_images(paths, kind="embed", normalize=False)
    train, test = (frame["split"] == "train").to_numpy(), (frame["split"] == "test").to_numpy()
    run = res["runs"][0]
    idx = run["train_indices"]
    probe = LogisticRegressionProbe(C=10.0, tol=CONVERGED_TOL).fit(feats[train][idx],
                                                                    frame["label"][train].to_numpy()[idx])
    assert run["C"] == probe.C_ == 10.0
    assert run["train_loss"] == pytest.approx(probe.loss_, rel=1e-5)
    probs = probe.predict_proba(feats[test])
    top2 = np.sort(probs, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3  # well-conditioned: every prediction wins by > 3x the noise
    np.testing.assert_array_equal(run["predictions"], probs.argmax(1))
    # a probe on other features (the wrong rows) is told apart: its loss differs far beyond the tolerance
    shuffled = LogisticRegressionProbe(C=10.0, tol=CONVERGED_TOL).fit(feats[train][idx][::-1],
                                                                       frame["label"][train].to_numpy()[idx])
    assert abs(shuffled.loss_ - run["train_loss"]) > 1e-3
    assert run["tol"] == CONVERGED_TOL
    assert model.linear_probe(HAM, n_bootstrap=0, solver="reference")["runs"][0]["tol"] is None
    with pytest.raises(PandermError, match="solver"):
        model.linear_probe(HAM, solver="sklearn")


def test_retrieval_metrics_equal_a_brute_force_ranking(model):
    frame = pd.read_csv(PH2)
    captions = (frame["concept_text"] + " " + frame["image_id"]).tolist()  # unique captions: no ties
    csv = PH2.parent / "_api_pairs.csv"
    try:
        frame.assign(caption=captions).to_csv(csv, index=False)
        res = model.retrieval(csv, image_col="filename" if "filename" in frame else "image_path",
                              caption_col="caption", n_bootstrap=0, cache=False)
    finally:
        csv.unlink(missing_ok=True)
    col = "filename" if "filename" in frame else "image_path"
    img = model.encode_images([str(PH2.parent / p) for p in frame[col]])
    txt = model.encode_text(captions)
    sims = img @ txt.T
    ranks = np.array([(sims[q] > sims[q, q]).sum() for q in range(len(sims))])
    assert res["n"] == len(frame)
    assert res["metrics"]["image_to_text_R@1"] == pytest.approx(np.mean(ranks < 1))
    assert res["metrics"]["image_to_text_R@5"] == pytest.approx(np.mean(ranks < 5))
    assert res["metrics"]["image_to_text_mean_rank"] == pytest.approx(ranks.mean() + 1)
