"""Issue 16: `panderm sweep`, a model × task × dataset grid on the bundled sample, then the leaderboard."""
import json
import shlex
from pathlib import Path

import pandas as pd
import pytest

from panderm.analysis.compare import compare_runs
from panderm.cli.sweep_run import SweepPlan, load_config, plan_cells, plan_from_config, recorded_argv
from panderm.cli import main
from panderm.errors import DataError
from panderm.models.demo import write_openclip_dir
from tiny_models import TINY_CLIP_CFG

REPO = Path(__file__).resolve().parents[1]
HAM_ZS = REPO / "data" / "sample" / "zero-shot-classification" / "HAM-official-7-zero-shot-test.csv"
HAM = REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv"


@pytest.fixture(scope="module")
def two_models(tiny_openclip, models_root):
    """The tiny open_clip model of conftest (seed 1) and the same architecture with other weights (seed 2)."""
    second = models_root / "tiny-clip-seed2"
    if not (second / "open_clip_model.safetensors").is_file():
        write_openclip_dir(second, TINY_CLIP_CFG, preprocess_cfg={"mean": [0.5] * 3, "std": [0.5] * 3}, seed=2,
                           random_init_flag=False)
    return f"local-dir:{tiny_openclip}", f"local-dir:{second}"


def _snapshot(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sweep_two_models_then_a_rerun_recomputes_nothing(tmp_path, two_models, capsys, two_torch_threads):
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    common = ["--tasks", "zeroshot", "linear-probe", "--benchmarks", f"HAM-7={HAM_ZS}", "--data-root", str(REPO),
              "--csv", f"ham={HAM}", "--linear-probe-args=--percent-data 0.5 1.0 --seeds 2", "--bootstrap", "50",
              "--device", "cpu", "--cache-dir", str(cache), "--out", str(out)]
    missing = f"local-dir:{tmp_path / 'no-such-model'}"

    # 1. two models that differ in their weights, and one that cannot load: its cells fail, the rest go on
    rc = main(["sweep", "--models", *two_models, missing, *common])
    text = capsys.readouterr()
    assert rc == 2
    assert "skipped 0 finished cells, 6 to run" in text.out
    assert text.out.count("FAILED") >= 2 and "no-such-model" in text.out
    assert "2 of 6 cells failed" in text.err
    assert any(cache.rglob("*")), "the cells share the --cache-dir feature cache"

    cells = sorted(p.parent for p in out.glob("*/*/*/results.json"))
    assert len(cells) == 4
    assert all(":" not in part for c in cells for part in c.relative_to(out).parts)  # local-dir:/... made safe
    assert {c.relative_to(out).parts[1:] for c in cells} == {("zeroshot", "HAM-7"), ("linear-probe", "ham")}
    recorded = json.loads((cells[0] / "results.json").read_text())["provenance"]["command"]
    assert recorded.startswith("panderm ") and "--out" in recorded  # each cell records its own command line
    assert not [p for p in out.iterdir() if "no-such-model" in p.name]  # a failed cell leaves no folder behind

    cmp = out / "compare"
    for f in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "pairwise.csv", "results.json",
              "plots/balanced_accuracy.png", "plots/auroc.png", "plots/label_efficiency_ham.png"):
        assert (cmp / f).is_file(), f
    board = pd.read_csv(cmp / "leaderboard.csv")
    assert sorted(board["model"]) == sorted(two_models) and sorted(board["rank"]) in ([1, 2], [1, 1])
    pw = pd.read_csv(cmp / "pairwise.csv")
    assert set(pw["benchmark"]) == {"zeroshot:HAM-7", "linear-probe:ham [percent_1.0 seed0]"}
    zs_auc = pw[(pw.benchmark == "zeroshot:HAM-7") & (pw.metric == "auroc")].iloc[0]
    assert zs_auc.a != zs_auc.b and 0 < zs_auc.p_value <= 1 and 0 <= zs_auc.delong_p <= 1  # weights differ
    assert pw["p_holm"].notna().all()

    # 2. the same sweep again: nothing recomputed, no file of a cell or of the leaderboard touched
    before = _snapshot(out / "compare") | {k: v for c in cells for k, v in _snapshot(c).items()}
    assert main(["sweep", "--models", *two_models, *common]) == 0
    again = capsys.readouterr().out
    assert "skipped 4 finished cells, 0 to run" in again and "leaderboard up to date" in again
    after = _snapshot(out / "compare") | {k: v for c in cells for k, v in _snapshot(c).items()}
    assert after == before

    # compare by hand on the sweep's folder: the same benchmarks (dataset names from its sweep.json)
    by_hand = compare_runs([out], tmp_path / "by-hand", metrics=("auroc",), n_resamples=20)
    assert set(by_hand.benchmarks) == set(pw["benchmark"])

    # 3. a cell whose recorded command differs is run again (in place); the leaderboard follows
    zs_cell = next(c for c in cells if c.parts[-2] == "zeroshot")
    res = json.loads((zs_cell / "results.json").read_text())
    original = res["provenance"]["command"]
    res["provenance"]["command"] += " --templates other.txt"
    (zs_cell / "results.json").write_text(json.dumps(res))
    assert main(["sweep", "--models", *two_models, *common]) == 0
    third = capsys.readouterr().out
    assert "skipped 3 finished cells, 1 to run" in third and "leaderboard up to date" not in third
    rerun = json.loads((zs_cell / "results.json").read_text())["provenance"]["command"]
    assert rerun == original + " --overwrite" and recorded_argv(zs_cell) == shlex.split(original)[1:]
    assert _snapshot(out / "compare") != {k: v for k, v in before.items() if "/compare/" in k}


def test_config_file_json_and_yaml(tmp_path):
    cfg = {"models": ["demo", "hf-hub:org/name"], "tasks": ["zeroshot", "linear-probe"],
           "datasets": {"zeroshot": {"PAD-6": {"benchmark": "PAD-6", "csv": "pad.csv", "root": "."}},
                        "linear-probe": {"pad": "pad-lp.csv"}},
           "args": {"all": ["--device", "cpu"], "linear-probe": "--percent-data 0.1 1.0 --seeds 3"},
           "bootstrap": 200, "cache_dir": "cache", "metrics": ["auroc"]}
    (tmp_path / "s.json").write_text(json.dumps(cfg))
    plan = plan_from_config(load_config(tmp_path / "s.json"))
    cells = plan_cells(plan, tmp_path / "out")
    assert [(c.model, c.task, c.dataset) for c in cells] == [
        ("demo", "zeroshot", "PAD-6"), ("demo", "linear-probe", "pad"),
        ("hf-hub:org/name", "zeroshot", "PAD-6"), ("hf-hub:org/name", "linear-probe", "pad")]
    assert cells[2].run_dir == tmp_path / "out" / "hf-hub_org_name" / "zeroshot" / "PAD-6"
    assert cells[1].argv == ["linear-probe", "--model", "demo", "--csv", "pad-lp.csv", "--device", "cpu",
                             "--cache-dir", "cache", "--bootstrap", "200", "--percent-data", "0.1", "1.0", "--seeds",
                             "3", "--out", str(tmp_path / "out" / "demo" / "linear-probe" / "pad")]
    assert cells[0].argv[:9] == ["zeroshot", "--model", "demo", "--benchmark", "PAD-6", "--csv", "pad.csv", "--root",
                                 "."]
    assert plan.bootstrap == 200 and plan.metrics == ["auroc"]

    yaml = pytest.importorskip("yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    assert plan_cells(plan_from_config(load_config(tmp_path / "s.yaml")), tmp_path / "out")[1].argv == cells[1].argv

    (tmp_path / "bad.json").write_text(json.dumps({"modles": ["demo"]}))
    with pytest.raises(DataError, match="unknown key"):
        load_config(tmp_path / "bad.json")


def test_cli_datasets_and_folder_names():
    plan = plan_from_config({"models": ["a:b", "a/b"], "tasks": ["zeroshot", "linear-probe"],
                             "benchmarks": ["PH2-2"], "data_root": "/data", "csv": ["x/pad-lp.csv"]})
    cells = plan_cells(plan, Path("/o"))
    names = {c.run_dir.parts[2] for c in cells}
    assert len(names) == 2 and all(n.startswith("a_b") for n in names)  # sanitised alike: a hash keeps them apart
    zs = next(c for c in cells if c.task == "zeroshot")
    assert zs.argv[3:7] == ["--benchmark", "PH2-2", "--data-root", "/data"]
    lp = next(c for c in cells if c.task == "linear-probe")
    assert lp.dataset == "pad-lp" and lp.argv[3:5] == ["--csv", "x/pad-lp.csv"]
    with pytest.raises(DataError, match="linear-probe has no dataset"):
        plan_from_config({"models": ["a"], "tasks": ["linear-probe"], "benchmarks": ["PH2-2"]})
    with pytest.raises(DataError):
        plan_from_config({"models": ["a"], "benchmarks": ["NOT-A-BENCHMARK"]})
    with pytest.raises(DataError, match="unknown metric"):
        plan_from_config({"models": ["a"], "benchmarks": ["PH2-2"], "metrics": ["aucroc"]})
    with pytest.raises(DataError, match="at least one model"):
        SweepPlan(models=[], tasks=["zeroshot"], datasets={})


def test_bad_task_flag_is_one_line_before_any_cell_runs(tmp_path, capsys):
    rc = main(["sweep", "--models", "demo", "--benchmarks", "PH2-2", "--zeroshot-args=--no-such-flag",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("panderm: error:")]
    assert len(lines) == 1 and "--no-such-flag" in lines[0] and "demo / zeroshot / PH2-2" in lines[0]
    assert not (tmp_path / "o" / "demo").exists()
    assert main(["sweep", "--models", "demo", "--benchmarks", "PH2-2"]) == 2
    assert "give --out DIR" in capsys.readouterr().err


def test_a_quiet_sweep_runs_quiet_cells(tmp_path, monkeypatch):
    """Each cell sets up logging anew through panderm.cli.main: `panderm -q sweep` must hand -q on."""
    from panderm import progress
    from panderm.cli import sweep_run as sweep

    seen = []
    command = lambda argv: seen.append(list(argv)) or 0  # noqa: E731
    cell = plan_cells(plan_from_config({"models": ["demo"], "benchmarks": ["PH2-2"]}), tmp_path / "o")[0]
    monkeypatch.setattr(progress, "_quiet", True)
    assert sweep._run_cell(cell, command) == ("failed", "the run wrote no results.json")
    monkeypatch.setattr(progress, "_quiet", False)
    sweep._run_cell(cell, command)
    assert seen == [cell.argv + ["-q"], cell.argv]
