"""Retrieval through the doors: reference keys vs a brute-force computation, reports, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import DataError
from panderm.tasks.retrieval_data import load_pairs

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO / "data" / "sample" / "ph2" / "ph2.csv"


def brute_force(img, txt):
    i = img / np.linalg.norm(img, axis=1, keepdims=True)
    t = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    s = i @ t.T
    out = {}
    for name, mat in (("image_to_text", s), ("text_to_image", s.T)):
        order = np.argsort(-mat, axis=1, kind="stable")
        r = np.array([np.where(order[q] == q)[0][0] for q in range(len(mat))])
        out.update({f"{name}_mean_rank": r.mean() + 1, f"{name}_median_rank": np.floor(np.median(r)) + 1})
        out.update({f"{name}_R@{k}": np.mean(r < k) for k in (1, 5, 10, 50)})
        out[f"{name}_mean_recall"] = np.mean([np.mean(r < k) for k in (5, 10, 50)])
    out["mean_recall"] = (out["image_to_text_mean_recall"] + out["text_to_image_mean_recall"]) / 2
    return out


def test_main_py_val_data_keys_equal_brute_force(tiny_openclip, tmp_path):
    from panderm.features import extract_features, extract_text_features
    from panderm.models import load_encoder

    frame = pd.read_csv(PH2).iloc[:60]
    frame["caption"] = frame["concept_text"] + " " + frame["image_id"]  # unique captions: no ties
    csv = tmp_path / "pairs.csv"
    frame.assign(filename=[str(PH2.parent / p) for p in frame["image_path"]]).to_csv(csv, index=False)
    logs = tmp_path / "logs"
    r = subprocess.run([sys.executable, "src/main.py", "--val-data", str(csv), "--dataset-type", "csv",
                        "--csv-img-key", "filename", "--csv-caption-key", "caption", "--model",
                        f"local-dir:{tiny_openclip}", "--device", "cpu", "--workers", "0", "--batch-size", "16",
                        "--logs", str(logs), "--name", "ret",
                        "--parent-path", str(tmp_path / "nowhere") + "/"],  # zero-shot CSVs only, as the reference
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    got = json.loads((logs / "ret" / "checkpoints" / "results.jsonl").read_text())
    # open_clip's evaluate order: the rank keys, clip_val_loss, epoch, num_samples; our extra keys after them.
    reference_order = [f"{d}_{k}" for d in ("image_to_text", "text_to_image")
                       for k in ("mean_rank", "median_rank", "R@5", "R@10", "R@50")]
    assert list(got)[:13] == reference_order + ["clip_val_loss", "epoch", "num_samples"]
    log_line = next(l for l in (logs / "ret" / "out.log").read_text().splitlines() if "Eval Epoch" in l)
    assert "\tepoch: 0.0000\tnum_samples: 60.0000" in log_line  # open_clip's f"{round(v, 4):.4f}"
    assert f"image_to_text_R@5: {round(got['image_to_text_R@5'], 4):.4f}" in log_line
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    img = np.asarray(extract_features(enc, [PH2.parent / p for p in frame["image_path"]], cache=False, num_workers=0).array)
    txt = extract_text_features(enc, frame["caption"].tolist(), cache=False)
    ref = brute_force(img, txt)
    for key, value in ref.items():
        if key in got:
            assert got[key] == pytest.approx(value, abs=1e-9), key
    for key in ("image_to_text_R@5", "text_to_image_median_rank", "image_to_text_R@1", "mean_recall", "clip_val_loss"):
        assert key in got
    assert got["num_samples"] == 60


def test_cli_retrieval_groups_duplicates_and_writes_report(tiny_openclip, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "panderm", "retrieval", "--model", f"local-dir:{tiny_openclip}",
                        "--csv", str(PH2), "--caption-col", "concept_text", "--out", str(out), "--bootstrap", "20"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    ranks = pd.read_csv(out / "ranks.csv")
    assert len(ranks) == 200 and (out / "examples.png").stat().st_size > 1000
    # PH2 criteria sentences repeat: grouped, there are fewer distinct caption queries than rows.
    n_distinct = pd.read_csv(PH2)["concept_text"].nunique()
    assert res["metrics"]["num_texts"] == n_distinct < 200
    assert res["provenance"]["duplicates"] == "auto"


@pytest.mark.parametrize("edit,needle", [
    (lambda f: f.drop(columns=["concept_text"]), "caption column 'concept_text' not found"),
    (lambda f: f.assign(concept_text=[""] + list(f["concept_text"][1:])), "caption column 'concept_text' is empty in row(s) 2"),
    (lambda f: f.iloc[:1], "retrieval needs at least 2 image-text pairs, got 1"),
])
def test_bad_retrieval_csvs(tmp_path, edit, needle):
    frame = edit(pd.read_csv(PH2).iloc[:5].copy())
    csv = tmp_path / "x.csv"
    frame.assign(image_path=[str(PH2.parent / p) for p in frame["image_path"]]).to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        load_pairs(csv, "image_path", "concept_text", allow_outside_root=True)
    assert needle in str(err.value)
