"""benchmarks/gpu_check.py on CPU (--quick): every correctness check runs and passes within its stated tolerance,
the speed rows hold consistent numbers, and the report names the device and the torch version."""
import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load()


@pytest.fixture(scope="module")
def quick_run(gpu_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    rc = gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)])
    report = json.loads((out / "gpu_check.json").read_text())
    return rc, report, (out / "gpu_check.md").read_text(), out


def test_every_correctness_check_passes_within_its_tolerance(gpu_check, quick_run):
    rc, report, _, _ = quick_run
    assert rc == 0
    checks = {c["name"]: c for c in report["correctness"]}
    assert list(checks) == gpu_check.correctness.CHECK_NAMES
    for name, check in checks.items():
        assert check["status"] == "PASS", (name, check.get("error"), check["measures"])
        assert check["measures"], name
        for m in check["measures"]:
            assert math.isfinite(m["deviation"]) and 0 <= m["deviation"] <= m["tolerance"], (name, m)
            assert m["ok"] is True
        assert check["reference_run"] == "cpu fp32" and check["device_run"].startswith("cpu ")
        assert check["peak_mem_bytes"] is None  # no CUDA: no device memory to report
        for log in check["logs"]:
            assert (quick_run[3] / "work" / log).is_file()
    assert report["correctness_passed"] is True
    # The stated tolerances are the ones applied.
    assert checks["features demo bf16"]["measures"][0]["tolerance"] == report["tolerances"]["features"]["bf16"]["cos"]
    assert checks["features demo fp16"]["effective_precision"] == "fp32"  # panderm autocasts on CUDA only


def test_the_door_check_compares_a_real_reduced_precision_run(quick_run):
    """src/main.py --precision amp runs under CPU float16 autocast (as the reference does on CPU): the check then
    measures a deviation that is not zero, and still within its tolerance."""
    _, report, _, _ = quick_run
    door = next(c for c in report["correctness"] if c["name"].startswith("zero-shot door"))
    if door["effective_precision"] != "cpu-fp16":
        pytest.skip("this torch has no float16 CPU autocast")
    probs = [m for m in door["measures"] if "probability" in m["what"]]
    assert len(probs) == 2 and max(m["deviation"] for m in probs) > 0
    assert all(m["deviation"] <= m["tolerance"] for m in door["measures"])


def test_speed_rows_are_consistent(quick_run):
    _, report, _, _ = quick_run
    models = [m["model"] for m in report["models"]]
    assert len(models) == 2
    rows = {(r["model"], r["precision"], r["compile"]): r for r in report["speed"]}
    assert set(rows) == {(m, p, c) for m in models for p in ("bf16", "fp16") for c in (False, True)}
    ran = [r for r in rows.values() if r["status"] == "ok"]
    assert {(r["model"], r["compile"]) for r in ran} >= {(models[0], False), (models[1], False), (models[0], True)}
    for r in ran:
        assert r["precision"] == "bf16" and r["effective_precision"] == "fp32"
        assert r["batch_size_auto"] == 64  # batch_size="auto" on CPU
        mo = r["model_only"]
        assert mo["img_s"] > 0 and mo["iters"] >= 3 and mo["peak_mem_bytes"] is None
        for name in ("small", "large"):
            e = r["e2e"][name]
            assert e["images"] == e["rows"] == 64 and e["img_s"] > 0 and e["workers"] >= 1
            assert e["ratio_to_model_only"] == pytest.approx(e["img_s"] / mo["img_s"], abs=2e-3)
            assert e["loader_wait_pct"] + e["model_busy_pct"] + e["other_pct"] == pytest.approx(100, abs=0.5)
            assert e["bottleneck"] == ("loader" if e["loader_wait_pct"] > e["model_busy_pct"] else "model")
            assert e["batches"] == 1 and e["peak_mem_bytes"] is None
        if r["compile"]:
            assert r["compile_s"] > 0
    for (model, precision, compiled), r in rows.items():
        if precision == "fp16":
            assert r["status"] == "not run on cpu" and "CUDA-only" in r["reason"]


def test_markdown_names_the_device_and_versions(quick_run):
    _, report, md, _ = quick_run
    assert report["device"]["type"] == "cpu" and report["device"]["torch"] == torch.__version__
    assert report["device"]["name"] in md and f"torch {torch.__version__}" in md
    assert "13 / 13 checks pass" in md
    for name in (c["name"] for c in report["correctness"]):
        assert f"| {name} |" in md
    assert md.count("| cae-tiny | bf16 |") == 2


def test_a_deviation_beyond_tolerance_fails_the_check(gpu_check, tmp_path):
    c = gpu_check.correctness
    ref = pd.DataFrame({"image_path": ["a", "b", "c"], "label": [0, 1, 0],
                        "prob_0": [0.9, 0.2, 0.51], "prob_1": [0.1, 0.8, 0.49]})
    near = ref.assign(prob_0=[0.89, 0.21, 0.49], prob_1=[0.11, 0.79, 0.51])  # only the near-tie flips
    assert all(m["ok"] for m in c.prob_measures(near, ref, "prob_", 0.05, ["image_path", "label"]))
    flipped = ref.assign(prob_0=[0.3, 0.2, 0.51], prob_1=[0.7, 0.8, 0.49])
    bad = {m["what"]: m for m in c.prob_measures(flipped, ref, "prob_", 0.05, ["image_path", "label"])}
    assert not bad["max |Δ probability|"]["ok"] and bad["max |Δ probability|"]["deviation"] == pytest.approx(0.6)
    assert [m["deviation"] for k, m in bad.items() if k.startswith("argmax")] == [1]
    reordered = c.prob_measures(ref.iloc[::-1], ref, "prob_", 0.05, ["image_path", "label"])
    assert len(reordered) == 1 and not reordered[0]["ok"]

    ctx = c.Ctx(device=torch.device("cpu"), quick=True, work=tmp_path, logs=tmp_path / "logs", workers=0)
    run = {"rc": 0, "seconds": 1.0, "peak_mem_bytes": None, "log": "logs/x.log"}
    fail = c._check("x", "t", "cpu amp", run, run, ctx, lambda: [c._measure("m", 0.2, 0.1)])
    assert fail["status"] == "FAIL"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "x.log").write_text("panderm: error: something broke\n")
    err = c._check("x", "t", "cpu amp", {**run, "rc": 2}, run, ctx, lambda: [])
    assert err["status"] == "ERROR" and "something broke" in err["error"]


def test_exit_code_is_one_when_a_check_fails(gpu_check, tmp_path, monkeypatch, capsys):
    failing = {"name": "features demo fp32", "task": "features", "device_run": "cpu fp32", "reference_run": "cpu fp32",
               "effective_precision": "fp32", "status": "FAIL",
               "measures": [{"what": "1 - min cosine", "deviation": 0.5, "tolerance": 1e-5, "ok": False}]}
    monkeypatch.setattr(gpu_check.correctness, "run_all", lambda ctx, progress: [failing])
    monkeypatch.setattr(gpu_check.speed, "run_all", lambda ctx, progress: ([], []))
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "o")]) == 1
    assert "1 correctness check(s) did not pass: features demo fp32" in capsys.readouterr().err
    md = (tmp_path / "o" / "gpu_check.md").read_text()
    assert "0 / 1 checks pass" in md and "| FAIL |" in md and "1 - min cosine: 0.5 (tol 1e-05)" in md


def test_cuda_requested_without_cuda_is_one_line(gpu_check, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
