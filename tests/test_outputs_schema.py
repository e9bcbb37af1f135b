"""One per-sample predictions schema for every `panderm` task (issue 18 item 11, docs/OUTPUTS.md).

Each task runs on tiny models; its predictions CSV has exactly `image_path` (+ `image_path_2` for
multimodal), `label`, `label_name`, `pred`, `pred_name`, `prob_<class name>` (both columns for two
classes); the probabilities sum to 1, `pred` is their arg-max and the names are the class names. The
reference doors keep the reference's columns (checked by their own tests: test_zeroshot,
test_linear_probe_run, test_multimodal_model / test_multimodal_e2e).
"""
import json

import numpy as np
import pandas as pd
import pytest

from panderm.cli import main as panderm_main
from panderm.predictions import predictions_frame
from test_finetune import tiny_csv  # noqa: F401  (fixture)
from test_multimodal_cli import OWN_COLS, TINY, own_csv  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _check(path, names, second_image=False, n=None):
    frame = pd.read_csv(path)
    probs_cols = [f"prob_{c}" for c in names]
    assert list(frame.columns) == ["image_path"] + (["image_path_2"] if second_image else []) + \
        ["label", "label_name", "pred", "pred_name"] + probs_cols
    probs = frame[probs_cols].to_numpy(np.float64)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (frame["pred"].to_numpy() == probs.argmax(1)).all()
    assert frame["label_name"].astype(str).tolist() == [str(names[k]) for k in frame["label"]]
    assert frame["pred_name"].astype(str).tolist() == [str(names[k]) for k in frame["pred"]]
    if n is not None:
        assert len(frame) == n
    return frame


def _run(*argv):
    assert panderm_main([str(a) for a in argv]) == 0


def test_helper_schema_and_duplicate_names():
    frame = predictions_frame(["a.jpg", "b.jpg"], [0, 1], [[0.2, 0.8], [0.6, 0.4]], ["x", "x"])
    assert list(frame.columns) == ["image_path", "label", "label_name", "pred", "pred_name", "prob_x", "prob_x_1"]
    assert frame["pred"].tolist() == [1, 0]
    frame = predictions_frame(["a"], [2], [[0.1, 0.2, 0.7]], image_paths_2=["c"])
    assert list(frame.columns) == ["image_path", "image_path_2", "label", "label_name", "pred", "pred_name",
                                   "prob_0", "prob_1", "prob_2"]
    with pytest.raises(ValueError):
        predictions_frame(["a"], [3], [[0.5, 0.5]])


def test_zeroshot_schema(tiny_openclip, ham_csv, tmp_path):
    out = tmp_path / "zs"
    _run("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--csv", ham_csv, "--classnames",
         ham_csv.parent / "classes.csv", "--label-col", "diag", "--bootstrap", "0", "--workers", "0",
         "--device", "cpu", "--out", out)
    res = json.loads((out / "results.json").read_text())
    entry = res["datasets"]["ham10000_sample"]
    frame = _check(out / "ham10000_sample" / "predictions.csv", entry["classnames"], n=entry["n"])
    assert (frame["label"].to_numpy() == pd.read_csv(ham_csv)["label"].to_numpy()).all()


def test_linear_probe_schema_multiclass_and_binary(ham_csv, tmp_path):
    out = tmp_path / "lp"
    _run("linear-probe", "--csv", ham_csv, "--model", "demo", "--bootstrap", "0", "--out", out)
    res = json.loads((out / "results.json").read_text())
    _check(out / "predictions" / "percent_1.0_seed0.csv", [str(k) for k in range(res["n_classes"])],
           n=res["n_test"])
    # Two classes: both probability columns, named by the classes.
    frame = pd.read_csv(ham_csv)
    binary = tmp_path / "binary.csv"
    frame.assign(image_path=[str(ham_csv.parent / p) for p in frame["image_path"]],
                 kind=np.where(frame["label"] == 0, "melanoma", "other")).to_csv(binary, index=False)
    out = tmp_path / "lp2"
    _run("linear-probe", "--csv", binary, "--model", "demo", "--bootstrap", "0", "--label-col", "kind",
         "--classnames", "other,melanoma", "--out", out)
    res = json.loads((out / "results.json").read_text())
    assert res["n_classes"] == 2
    _check(out / "predictions" / "percent_1.0_seed0.csv", ["other", "melanoma"], n=res["n_test"])


def test_finetune_schema(tiny_panderm_v1, tiny_csv, tmp_path):  # noqa: F811
    out = tmp_path / "ft"
    _run("finetune", "--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", tiny_csv,
         "--device", "cpu", "--workers", 0, "--bootstrap", 0, "--epochs", 1, "--warmup-epochs", 0,
         "--batch-size", 8, "--max-steps", 1, "--out", out)
    res = json.loads((out / "results.json").read_text())
    _check(out / "predictions" / "test.csv", [str(k) for k in range(res["n_classes"])], n=res["n_test"])


def test_multimodal_schema_and_metric_names(own_csv, tmp_path):  # noqa: F811
    out = tmp_path / "mm"
    _run("multimodal", "train", "--model", "demo", "--dataset", "csv", "--data-path", own_csv, "--use-cli",
         *OWN_COLS, *TINY, "--epochs", 1, "--output-dir", out)
    res = json.loads((out / "results.json").read_text())
    frame = _check(out / "detailed_predictions.csv", [str(k) for k in range(res["n_classes"])], second_image=True,
                   n=res["n_test"])
    assert frame["image_path"].notna().all() and frame["image_path_2"].notna().all()
    # One metric vocabulary: the registry's names (the door keeps the reference's f1_macro / balanced_acc).
    from panderm.metrics import METRIC_NAMES

    assert {"macro_f1", "balanced_accuracy"} <= set(res["metrics"])
    assert not {"f1_macro", "balanced_acc"} & set(res["metrics"])
    assert set(res["metrics"]) - {"avg_test_loss"} <= set(METRIC_NAMES)
    assert list(pd.read_csv(out / "evaluation_metrics.csv").columns) == list(res["metrics"])
