"""Every classification task carries the analyses (issue 16 items 2-3): calibration in results.json always,
subgroups with --group-col, temperature scaling with --calibrate temperature. Values are recomputed here from
the written predictions and the input CSV, independently of panderm.analysis."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from panderm.cli import main as panderm_main
from test_finetune import tiny_csv  # noqa: F401  (fixture)
from test_multimodal_cli import OWN_COLS, TINY, own_csv  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("two_torch_threads")

PAD = "data/sample/pad_ufes20_sample/pad_ufes20_sample.csv"


def _run(*argv):
    assert panderm_main([str(a) for a in argv]) == 0


def _ece(y, probs, n_bins=15):
    """Equal-width ECE by a plain loop: bins (a, b], the first one also holding confidence 0."""
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(y) * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


def _probs(frame, names):
    return frame[[f"prob_{c}" for c in names]].to_numpy(np.float64)


def _nll(y, probs):
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def test_zeroshot_subgroups_and_calibration_on_pad(tmp_path):
    out = tmp_path / "zs"
    _run("zeroshot", "--model", "demo", "--csv", PAD, "--classnames",
         "data/sample/pad_ufes20_sample/classes.csv", "--split", "test", "--bootstrap", "50", "--workers", "0",
         "--device", "cpu", "--group-col", "fitspatrick", "age", "--bins", "age=0,40,60,120", "--min-group", "5",
         "--out", out)
    res = json.loads((out / "results.json").read_text())
    name, entry = next(iter(res["datasets"].items()))
    pred = pd.read_csv(out / name / "predictions.csv")
    rows = pd.read_csv(PAD)
    rows = rows[rows["split"] == "test"].reset_index(drop=True)
    assert list(pred["image_path"]) == list(rows["image_path"])
    y, probs = pred["label"].to_numpy(), _probs(pred, entry["classnames"])

    assert entry["calibration"]["ece"] == pytest.approx(_ece(y, probs), abs=1e-9)
    assert entry["calibration"]["nll"] == pytest.approx(_nll(y, probs), abs=1e-9)
    onehot = np.eye(probs.shape[1])[y]
    assert entry["calibration"]["brier"] == pytest.approx(((probs - onehot) ** 2).sum(1).mean(), abs=1e-9)
    for f in ("reliability.png", "subgroups.csv", "subgroups.png"):
        assert (out / name / f).stat().st_size > 0

    fitz = entry["subgroups"]["columns"]["fitspatrick"]["groups"]
    keys = rows["fitspatrick"].astype("string").fillna("missing")
    # group labels as written ("3.0" for a float column read with NaN); match by count and recomputed values
    assert sorted(g["n"] for g in fitz) == sorted(keys.value_counts().tolist())
    for g in fitz:
        mask = (keys == g["group"]).to_numpy() if g["group"] in set(keys) else \
            (rows["fitspatrick"].astype(float) == float(g["group"])).to_numpy()
        assert mask.sum() == g["n"]
        assert g["small"] == (g["n"] < 5)
        assert g["metrics"]["accuracy"] == pytest.approx(accuracy_score(y[mask], probs[mask].argmax(1)), abs=1e-12)
    ages = entry["subgroups"]["columns"]["age"]["groups"]
    bins = pd.cut(rows["age"], [0, 40, 60, 120], right=False)
    assert sorted(g["n"] for g in ages) == sorted(bins.value_counts().loc[lambda s: s > 0].tolist())
    table = pd.read_csv(out / name / "subgroups.csv")
    assert set(table["column"]) == {"fitspatrick", "age"}


def test_linear_probe_temperature_scaling_and_per_run_analysis(ham_csv, tmp_path):
    out = tmp_path / "lp"
    _run("linear-probe", "--csv", ham_csv, "--model", "demo", "--bootstrap", "0", "--seeds", "2",
         "--calibrate", "temperature", "--group-col", "sex", "--min-group", "3", "--out", out)
    res = json.loads((out / "results.json").read_text())
    names = [str(k) for k in range(res["n_classes"])] if not res["classnames"] else res["classnames"]
    frame = pd.read_csv(ham_csv)
    test_rows = frame[frame["split"] == "test"].reset_index(drop=True)
    for run in res["runs"]:
        tag = f"percent_{run['percent']}_seed{run['seed']}"
        pred = pd.read_csv(out / "predictions" / f"{tag}.csv")
        y, probs = pred["label"].to_numpy(), _probs(pred, names)
        assert run["calibration"]["ece"] == pytest.approx(_ece(y, probs), abs=1e-9)
        ts = run["temperature_scaling"]
        assert ts["temperature"] > 0
        assert ts["val"]["after"]["nll"] <= ts["val"]["before"]["nll"] + 1e-12
        assert ts["test"]["before"]["nll"] == pytest.approx(_nll(y, probs), abs=1e-9)
        logits = np.log(np.clip(probs, 1e-12, None)) / ts["temperature"]
        scaled = np.exp(logits - logits.max(1, keepdims=True))
        scaled /= scaled.sum(1, keepdims=True)
        assert ts["test"]["after"]["nll"] == pytest.approx(_nll(y, scaled), rel=1e-6)
        sex = run["subgroups"]["columns"]["sex"]["groups"]
        for g in sex:
            mask = (test_rows["sex"].fillna("missing").astype(str) == g["group"]).to_numpy()
            assert g["n"] == mask.sum()
            assert g["metrics"]["balanced_accuracy"] == pytest.approx(
                balanced_accuracy_score(y[mask], probs[mask].argmax(1)), abs=1e-12) or g["n"] < 2
        assert (out / "analysis" / f"{tag}_reliability.png").is_file()
        assert (out / "analysis" / f"{tag}_subgroups.csv").is_file()


def test_analysis_flags_fail_before_the_model_loads(ham_csv, tmp_path, capsys):
    out = tmp_path / "never"
    rc = panderm_main(["linear-probe", "--csv", str(ham_csv), "--model", "demo", "--group-col", "skin_tone",
                       "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "'skin_tone'" in err[0] and "--group-col" in err[0]
    assert not out.exists()
    rc = panderm_main(["zeroshot", "--model", "demo", "--csv", PAD, "--classnames",
                       "data/sample/pad_ufes20_sample/classes.csv", "--group-col", "gender", "--bins", "age=0,50",
                       "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "age" in err[0] and "--bins" in err[0]
    no_val = tmp_path / "no_val.csv"
    frame = pd.read_csv(ham_csv)
    frame = frame[frame["split"] != "val"]
    frame["image_path"] = [str(ham_csv.parent / p) for p in frame["image_path"]]
    frame.to_csv(no_val, index=False)
    rc = panderm_main(["linear-probe", "--csv", str(no_val), "--model", "demo", "--calibrate", "temperature",
                       "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "val" in err[0]
    assert not out.exists()


def test_finetune_and_multimodal_carry_the_analyses(tiny_panderm_v1, tiny_csv, own_csv, tmp_path):  # noqa: F811
    out = tmp_path / "ft"
    _run("finetune", "--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", tiny_csv,
         "--device", "cpu", "--workers", 0, "--bootstrap", 0, "--epochs", 1, "--warmup-epochs", 0,
         "--batch-size", 8, "--max-steps", 1, "--calibrate", "temperature", "--group-col", "label",
         "--min-group", "1", "--out", out)
    res = json.loads((out / "results.json").read_text())
    pred = pd.read_csv(out / "predictions" / "test.csv")
    y, probs = pred["label"].to_numpy(), _probs(pred, [str(k) for k in range(res["n_classes"])])
    assert res["calibration"]["ece"] == pytest.approx(_ece(y, probs), abs=1e-9)
    ts = res["temperature_scaling"]
    assert ts["val"]["after"]["nll"] <= ts["val"]["before"]["nll"] + 1e-12
    by_label = res["subgroups"]["columns"]["label"]["groups"]
    assert sorted(g["n"] for g in by_label) == sorted(np.bincount(y).tolist())
    for g in by_label:  # within one true class, accuracy is that class's recall
        mask = y == int(float(g["group"]))
        assert g["metrics"]["accuracy"] == pytest.approx((probs[mask].argmax(1) == y[mask]).mean(), abs=1e-12)

    out = tmp_path / "mm"
    _run("multimodal", "train", "--model", "demo", "--dataset", "csv", "--data-path", own_csv, "--use-cli",
         *OWN_COLS, *TINY, "--epochs", 1, "--calibrate", "temperature", "--group-col", "sentence",
         "--min-group", "2", "--output-dir", out)
    res = json.loads((out / "results.json").read_text())
    pred = pd.read_csv(out / "detailed_predictions.csv")
    y, probs = pred["label"].to_numpy(), _probs(pred, res["classnames"])
    assert res["calibration"]["nll"] == pytest.approx(_nll(y, probs), abs=1e-9)
    assert res["temperature_scaling"]["val"]["after"]["nll"] <= res["temperature_scaling"]["val"]["before"]["nll"] + 1e-12
    assert sum(g["n"] for g in res["subgroups"]["columns"]["sentence"]["groups"]) == len(y)
    assert (out / "reliability.png").is_file() and (out / "subgroups.csv").is_file()


def test_summary_lines_name_the_worst_group_gap_and_temperature():
    from panderm.analysis.attach import summary_lines

    cal = {"ece": 0.25, "ece_equal_mass": 0.2, "brier": 0.5, "nll": 1.25}
    entry = {
        "calibration": cal,
        "temperature_scaling": {"temperature": 2.0, "test": {"before": cal, "after": {**cal, "nll": 1.0, "ece": 0.1}}},
        "subgroups": {"metrics": ["accuracy", "balanced_accuracy"], "min_group": 5, "columns": {"fitspatrick": {
            "groups": [{"group": "2", "n": 8, "small": False}, {"group": "5", "n": 1, "small": True}],
            "worst_group": {"balanced_accuracy": {"group": "2", "value": 0.4}},
            "largest_gap": {"balanced_accuracy": None}}}},
    }
    assert summary_lines(entry, "PAD: ") == [
        "PAD: calibration: ECE 0.250 (equal-mass 0.200), Brier 0.500, NLL 1.250",
        "PAD: temperature 2 (fitted on val): test NLL 1.250 -> 1.000, ECE 0.250 -> 0.100",
        "PAD: by fitspatrick: 2 groups (1 smaller than 5 rows); worst balanced_accuracy 0.400 (fitspatrick 2, n=8)",
    ]
    assert summary_lines({}) == []
