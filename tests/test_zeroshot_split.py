"""`panderm zeroshot --split NAME` / `evaluate_zero_shot(split=)` score one split; a split column left unchosen is
one warning line (issue 18 item 12). The reference door keeps scoring every row, without that warning."""
import json
import logging
from pathlib import Path

import pandas as pd

import in_process

REPO = Path(__file__).resolve().parents[1]


def _panderm(*args):
    """`panderm` in this process (its process smoke tests: test_cli_features); warnings land in caplog."""
    from panderm.cli import main

    return in_process.run(main, args)


def _classes(ham_csv):
    return str(ham_csv.parent / "classes.csv")


def test_cli_split_scores_only_that_split_and_unchosen_split_warns(tiny_openclip, ham_csv, tmp_path, caplog):
    frame = pd.read_csv(ham_csv)
    n_test = int((frame["split"] == "test").sum())
    assert 0 < n_test < len(frame)
    common = ["zeroshot", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--classnames",
              _classes(ham_csv), "--label-col", "diag", "--bootstrap", "0", "--workers", "0"]
    r = _panderm(*common, "--split", "test", "--out", str(tmp_path / "test"))
    assert r.returncode == 0, r.stderr
    entry = json.loads((tmp_path / "test" / "results.json").read_text())["datasets"]["ham10000_sample"]
    assert entry["n"] == n_test and entry["split"] == "test"
    preds = pd.read_csv(tmp_path / "test" / "ham10000_sample" / "predictions.csv")
    assert len(preds) == n_test
    assert not [m for m in caplog.messages if "no split was chosen" in m]

    r = _panderm(*common, "--out", str(tmp_path / "all"))
    assert r.returncode == 0, r.stderr
    entry = json.loads((tmp_path / "all" / "results.json").read_text())["datasets"]["ham10000_sample"]
    assert entry["n"] == len(frame) and entry["split"] is None
    warned = [m for m in caplog.messages if "no split was chosen" in m]
    assert len(warned) == 1 and warned[0].endswith("choose one with --split NAME to score it"), r.stderr

    r = _panderm(*common, "--split", "tset", "--out", str(tmp_path / "typo"))
    assert r.returncode != 0 and "tset" in r.stderr


def test_api_split(tiny_openclip, ham_csv, caplog):
    from panderm import PanDerm2
    from panderm.data.benchmarks import load_classnames

    frame = pd.read_csv(ham_csv)
    model = PanDerm2.from_pretrained(f"local-dir:{tiny_openclip}", device="cpu")
    classnames = list(load_classnames(_classes(ham_csv)))
    kw = dict(label_col="diag", n_bootstrap=0, cache=False)
    with caplog.at_level(logging.WARNING):
        res = model.evaluate_zero_shot(ham_csv, classnames, split="test", **kw)
    assert res["n"] == int((frame["split"] == "test").sum())
    assert not [r for r in caplog.records if "no split was chosen" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = model.evaluate_zero_shot(ham_csv, classnames, **kw)
    assert res["n"] == len(frame)
    warned = [r.getMessage() for r in caplog.records if "no split was chosen" in r.getMessage()]
    assert len(warned) == 1 and warned[0].endswith("choose one with split= to score it"), warned


def test_reference_door_build_keeps_every_row_without_the_warning(ham_csv, caplog):
    from panderm.data.benchmarks import load_classnames
    from panderm.tasks.zeroshot import build_dataset

    with caplog.at_level(logging.WARNING):
        ds = build_dataset(ham_csv, load_classnames(_classes(ham_csv)), label_col="diag")
    assert len(ds.table) == len(pd.read_csv(ham_csv)) and ds.split is None
    assert not [r for r in caplog.records if "no split was chosen" in r.getMessage()]

