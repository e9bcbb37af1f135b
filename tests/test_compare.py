"""Issue 16: `panderm compare` over run folders (synthetic runs in the documented layouts of docs/OUTPUTS.md)."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.analysis.compare import compare_runs, safe_name
from panderm.analysis.runs import load_run
from panderm.analysis.stats import delong_multiclass, holm, paired_bootstrap
from panderm.cli import main
from panderm.errors import DataError
from panderm.metrics import bootstrap_ci
from panderm.predictions import predictions_frame

CLASSES = ["nevus", "melanoma", "bcc"]


def _probs(rng, y, k, signal):
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def _prov(model, fingerprint="f" * 20, csv="data/x.csv", random_init=False):
    return {"command": "panderm ...", "seed": 42, "csv_sha256": {csv: "0" * 64},
            "model": {"model_id": model, "fingerprint": fingerprint, "random_init": random_init}}


def zeroshot_run(folder: Path, model, sets: dict, fingerprint="f" * 20) -> Path:
    """A zeroshot run folder: results.json (datasets) + <dataset>/predictions.csv."""
    datasets = {}
    for name, (paths, labels, probs) in sets.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        predictions_frame(paths, labels, probs, CLASSES[:probs.shape[1]]).to_csv(folder / name / "predictions.csv",
                                                                                 index=False)
        datasets[name] = {"csv": f"{name}.csv", "n": len(labels), "classnames": CLASSES[:probs.shape[1]],
                          "metrics": {"accuracy": 0.0}, "ci95": {}}
    (folder / "results.json").write_text(json.dumps({"datasets": datasets, "provenance": _prov(model, fingerprint)}))
    return folder


def lp_run(folder: Path, model, paths, labels, runs: dict, csv="data/pad-lp.csv") -> Path:
    """A linear-probe run folder: results.json (setting, runs, summary) + predictions/percent_P_seedN.csv."""
    (folder / "predictions").mkdir(parents=True, exist_ok=True)
    entries, summary = [], {}
    for (percent, seed), probs in runs.items():
        predictions_frame(paths, labels, probs, CLASSES).to_csv(
            folder / "predictions" / f"percent_{percent}_seed{seed}.csv", index=False)
        acc = float((probs.argmax(1) == labels).mean())
        entries.append({"percent": percent, "shots": None, "seed": seed, "metrics": {"accuracy": acc}, "ci": {}})
        summary.setdefault(str(percent), {"accuracy": {"values": []}})["accuracy"]["values"].append(acc)
    for s in summary.values():
        v = s["accuracy"]["values"]
        s["accuracy"].update(mean=float(np.mean(v)), std=float(np.std(v)), n_seeds=len(v))
    (folder / "results.json").write_text(json.dumps({
        "setting": "percent", "n_classes": 3, "classnames": CLASSES, "n_features": 8, "n_test": len(labels),
        "summary": summary, "runs": entries, "provenance": _prov(model, csv=csv)}))
    return folder


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    out = {}
    for name, n in (("PAD-6", 90), ("HAM-7", 70)):
        y = rng.integers(0, 3, size=n)
        paths = [f"images/{name}_{i}.jpg" for i in range(n)]
        out[name] = (paths, y, _probs(rng, y, 3, 2.5), _probs(rng, y, 3, 0.2))
    return out


@pytest.fixture
def two_runs(tmp_path, data):
    good = zeroshot_run(tmp_path / "good", "hf-hub:org/good", {k: (p, y, a) for k, (p, y, a, b) in data.items()})
    weak = zeroshot_run(tmp_path / "weak", "local-dir:/models/weak", {k: (p, y, b) for k, (p, y, a, b) in data.items()})
    return good, weak


def test_leaderboard_and_pairwise_equal_direct_computation(tmp_path, data, two_runs):
    res = compare_runs(list(two_runs), tmp_path / "cmp", metrics=("balanced_accuracy", "auroc"), n_resamples=200)
    for f in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "pairwise.csv", "results.json",
              "plots/balanced_accuracy.png", "plots/auroc.png"):
        assert (tmp_path / "cmp" / f).is_file(), f
    assert res.models == ["hf-hub:org/good", "local-dir:/models/weak"]
    assert [r["rank"] for r in res.leaderboard] == [1, 2]

    board = pd.read_csv(tmp_path / "cmp" / "leaderboard.csv")
    assert list(board["model"]) == res.models and list(board["rank"]) == [1, 2]
    paths, y, pa, pb = data["PAD-6"]
    ci = bootstrap_ci(y, pa, ["balanced_accuracy", "auroc"], n_resamples=200, seed=42)
    row = board.iloc[0]
    for m in ("balanced_accuracy", "auroc"):
        assert row[f"zeroshot:PAD-6 {m}"] == pytest.approx(ci[m]["value"])
        assert row[f"zeroshot:PAD-6 {m} ci_low"] == pytest.approx(ci[m]["ci_low"])
        assert row[f"zeroshot:PAD-6 {m} ci_high"] == pytest.approx(ci[m]["ci_high"])

    pw = pd.read_csv(tmp_path / "cmp" / "pairwise.csv")
    assert len(pw) == 2 * 2  # 2 benchmarks x 2 metrics, one model pair
    for metric in ("balanced_accuracy", "auroc"):
        rows = pw[pw.metric == metric].set_index("benchmark")
        ps = []
        for bench in ("PAD-6", "HAM-7"):
            paths, y, pa, pb = data[bench]
            direct = paired_bootstrap(y, pa, pb, metric, n_resamples=200, seed=42)
            r = rows.loc[f"zeroshot:{bench}"]
            assert (r.model_a, r.model_b) == ("hf-hub:org/good", "local-dir:/models/weak")
            for key in ("a", "b", "diff", "ci_low", "ci_high", "p_value"):
                assert r[key] == pytest.approx(direct[key]), (bench, metric, key)
            ps.append(direct["p_value"])
            if metric == "auroc":
                assert r.delong_p == pytest.approx(delong_multiclass(y, pa, pb)["p_value"])
        assert list(rows.loc[["zeroshot:PAD-6", "zeroshot:HAM-7"], "p_holm"]) == pytest.approx(list(holm(ps)))
        if metric == "auroc":
            dp = [delong_multiclass(data[b][1], data[b][2], data[b][3])["p_value"] for b in ("PAD-6", "HAM-7")]
            assert list(rows.loc[["zeroshot:PAD-6", "zeroshot:HAM-7"], "delong_p_holm"]) == pytest.approx(list(holm(dp)))

    md = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "| 1 | hf-hub:org/good |" in md and "Paired comparisons" in md
    html = (tmp_path / "cmp" / "leaderboard.html").read_text()
    assert "<table>" in html and "local-dir:/models/weak" in html and "plots/auroc.png" in html
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["settings"]["n_resamples"] == 200 and len(saved["pairwise"]) == 4
    assert {i["run_dir"] for i in saved["inputs"]} == {str(p) for p in two_runs}


def test_model_compared_with_itself_in_two_folders(tmp_path, data):
    sets = {k: (p, y, a) for k, (p, y, a, b) in data.items()}
    one = zeroshot_run(tmp_path / "one", "m", sets, fingerprint="a" * 20)
    two = zeroshot_run(tmp_path / "two", "m", sets, fingerprint="b" * 20)  # same id, other weights file
    res = compare_runs([one, two], tmp_path / "cmp", n_resamples=100)
    assert set(res.models) == {"m@aaaaaaaa", "m@bbbbbbbb"}
    for r in res.pairwise:
        assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0 and r["p_value"] == 1.0
        if r["metric"] == "auroc":
            assert r["delong_p"] == 1.0


def test_different_images_are_refused_naming_both_folders(tmp_path, data, capsys):
    paths, y, pa, pb = data["PAD-6"]
    a = zeroshot_run(tmp_path / "a", "m1", {"PAD-6": (paths, y, pa)})
    other = list(paths)
    other[5] = "images/somewhere_else.jpg"
    b = zeroshot_run(tmp_path / "b", "m2", {"PAD-6": (other, y, pb)})
    with pytest.raises(DataError) as err:
        compare_runs([a, b], tmp_path / "cmp")
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "different images" in msg and "\n" not in msg
    # labels differ
    y2 = y.copy()
    y2[3] = (y2[3] + 1) % 3
    c = zeroshot_run(tmp_path / "c", "m3", {"PAD-6": (paths, y2, pb)})
    with pytest.raises(DataError, match="labels differ"):
        compare_runs([a, c], tmp_path / "cmp")
    # fewer images
    d = zeroshot_run(tmp_path / "d", "m4", {"PAD-6": (paths[:-1], y[:-1], pb[:-1])})
    with pytest.raises(DataError, match="90 vs 89 images"):
        compare_runs([a, d], tmp_path / "cmp")
    # the CLI: one line on stderr, exit 2
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp2")]) == 2
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("panderm: error:") and str(b) in err_lines[0]


def test_same_images_in_another_order_are_aligned(tmp_path, data):
    paths, y, pa, pb = data["PAD-6"]
    a = zeroshot_run(tmp_path / "a", "m1", {"PAD-6": (paths, y, pa)})
    perm = np.random.default_rng(1).permutation(len(y))
    b = zeroshot_run(tmp_path / "b", "m2", {"PAD-6": ([paths[i] for i in perm], y[perm], pb[perm])})
    res = compare_runs([a, b], tmp_path / "cmp", metrics=("accuracy",), n_resamples=50)
    direct = paired_bootstrap(y, pa, pb, "accuracy", n_resamples=50)
    assert res.pairwise[0]["diff"] == pytest.approx(direct["diff"])
    assert res.pairwise[0]["p_value"] == pytest.approx(direct["p_value"])


def test_one_model_twice_on_a_benchmark_is_refused(tmp_path, data):
    paths, y, pa, pb = data["PAD-6"]
    a = zeroshot_run(tmp_path / "a", "m1", {"PAD-6": (paths, y, pa)})
    b = zeroshot_run(tmp_path / "b", "m1", {"PAD-6": (paths, y, pa)})
    with pytest.raises(DataError, match="has two runs"):
        compare_runs([a, b], tmp_path / "cmp")


def test_linear_probe_settings_seeds_and_label_efficiency(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=60)
    paths = [f"img{i}.png" for i in range(60)]

    def runs(signal):
        return {(p, s): _probs(rng, y, 3, signal * p) for p in (0.1, 0.5, 1.0) for s in (0, 1)}

    a = lp_run(tmp_path / "lp_a", "PanDerm2", paths, y, runs(3.0))
    b = lp_run(tmp_path / "lp_b", "CLIP-L14", paths, y, runs(0.5))
    items = load_run(a)
    assert [i.setting for i in items] == ["percent_0.1", "percent_0.1", "percent_0.5", "percent_0.5", "percent_1.0",
                                          "percent_1.0"]
    assert items[0].dataset == "pad-lp" and items[0].model == "PanDerm2" and items[0].task == "linear-probe"
    primary = compare_runs([a, b], tmp_path / "cmp", metrics=("accuracy",), n_resamples=50)
    assert primary.benchmarks == ["linear-probe:pad-lp [percent_1.0 seed0]"]
    assert (tmp_path / "cmp" / "plots" / "label_efficiency_pad-lp.png").is_file()
    curves = json.loads((tmp_path / "cmp" / "results.json").read_text())["label_efficiency"]
    a_curve = next(c for c in curves if c["model"] == "PanDerm2")
    assert a_curve["x"] == [10.0, 50.0, 100.0] and len(a_curve["std"]) == 3
    every = compare_runs([a, b], tmp_path / "cmp_all", metrics=("accuracy",), n_resamples=50, lp_settings="all")
    assert len(every.benchmarks) == 6 and len(every.pairwise) == 6
    # Holm runs across all six (setting, seed) benchmarks of the pair
    assert [r["p_holm"] for r in every.pairwise] == pytest.approx(list(holm([r["p_value"] for r in every.pairwise])))


def test_a_parent_folder_is_searched_and_other_layouts_load(tmp_path, data):
    paths, y, pa, pb = data["HAM-7"]
    zeroshot_run(tmp_path / "sweep" / "m1" / "zeroshot" / "HAM-7", "m1", {"HAM-7": (paths, y, pa)})
    zeroshot_run(tmp_path / "sweep" / "m2" / "zeroshot" / "HAM-7", "m2", {"HAM-7": (paths, y, pb)})
    res = compare_runs([tmp_path / "sweep"], tmp_path / "cmp", n_resamples=20)
    assert sorted(res.models) == ["m1", "m2"] and len(res.pairwise) == 3

    ft = tmp_path / "ft"
    (ft / "predictions").mkdir(parents=True)
    predictions_frame(paths, y, pa, CLASSES).to_csv(ft / "predictions" / "test.csv", index=False)
    (ft / "results.json").write_text(json.dumps({"task": "finetune", "classnames": CLASSES, "metrics": {},
                                                  "provenance": _prov("PanDerm-L", csv="data/ham.csv")}))
    [item] = load_run(ft)
    assert item.task == "finetune" and item.dataset == "ham" and item.probs == pytest.approx(pa)

    mm = tmp_path / "mm"
    mm.mkdir()
    ref = pd.DataFrame({"derm_filename": paths, "cli_filename": paths, "true_label": y, "predicted_label": pb.argmax(1),
                        **{f"probability_class_{k}": pb[:, k] for k in range(3)}})
    ref.to_csv(mm / "detailed_predictions.csv", index=False)
    (mm / "results_test.json").write_text(json.dumps({"task": "multimodal", "metrics": {},
                                                       "provenance": _prov("PanDerm2", csv="data/mm.csv")}))
    [item] = load_run(mm)
    assert item.task == "multimodal" and list(item.labels) == list(y) and item.probs == pytest.approx(pb)


def test_not_a_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no panderm classification run"):
        compare_runs([tmp_path / "empty"], tmp_path / "cmp")
    (tmp_path / "ret").mkdir()
    (tmp_path / "ret" / "results.json").write_text(json.dumps({"metrics": {}, "provenance": {}}))
    with pytest.raises(DataError, match="retrieval and segmentation"):
        load_run(tmp_path / "ret")
    with pytest.raises(DataError, match="not found"):
        compare_runs([tmp_path / "nowhere"], tmp_path / "cmp")


def test_compare_cli_prints_a_short_table(tmp_path, two_runs, capsys):
    rc = main(["compare", *map(str, two_runs), "--out", str(tmp_path / "c"), "--bootstrap", "50",
               "--metrics", "auroc", "accuracy"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "auroc (95% CIs" in out and "hf-hub:org/good" in out and "paired tests: 4" in out
    assert (tmp_path / "c" / "leaderboard.html").is_file()
    assert main(["compare", str(two_runs[0]), "--out", str(tmp_path / "d"), "--metrics", "bogus"]) == 2


def test_bootstrap_zero_gives_point_values_and_delong(tmp_path, two_runs):
    res = compare_runs(list(two_runs), tmp_path / "cmp", metrics=("auroc",), n_resamples=0)
    r = res.pairwise[0]
    assert math.isnan(r["p_value"]) and r["delong_p"] < 0.05
    assert math.isnan(res.leaderboard[0]["cells"]["zeroshot:PAD-6 auroc"]["ci_low"])


def test_safe_name():
    assert safe_name("local-dir:/models/a") == "local-dir_models_a"
    assert safe_name("hf-hub:org/name") == "hf-hub_org_name"
    assert safe_name("PanDerm2") == "PanDerm2"
    assert len(safe_name("x" * 300)) == 80
