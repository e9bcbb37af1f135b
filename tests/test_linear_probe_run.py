"""Linear probe through its doors, on real images."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torchvision import transforms as T

from panderm.tasks.linear_probe import run_linear_probe
from panderm.tasks.linear_probe_run import reference_output_dir

REPO = Path(__file__).resolve().parents[1]
PAD = REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"
HAM = REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv"


@pytest.fixture(scope="module")
def resnet_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("r18") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path


def test_reference_door_files_and_numbers(resnet_ckpt, tmp_path):
    csv = tmp_path / "pad-lp-ws0.csv"
    frame = pd.read_csv(HAM)
    frame.assign(filename=frame["image_path"]).to_csv(csv, index=False)
    out = tmp_path / "logs" / "open_clip_hf-hub:org" / "x"
    r = subprocess.run([sys.executable, "linear_probe/linear_eval.py", "--csv_path", str(csv), "--csv_filename",
                        "some/dir/ResNet_PAD_results.csv", "--image_key", "filename", "--root_path", str(HAM.parent),
                        "--model", "torchvision:resnet18", "--checkpoint", str(resnet_ckpt), "--percent_data", "0.5",
                        "--device", "cpu", "--num_workers", "0", "--output_dir", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    out = Path(reference_output_dir(str(out)))
    assert out == tmp_path / "logs" / "x"
    preds = pd.read_csv(out / "pad-lp-ws0.csv")
    assert list(preds.columns) == ["filename", "true_label", "predicted_label"] + [f"probability_class_{k}" for k in range(7)]
    summary = pd.read_csv(out / "ResNet_PAD_results.csv")
    assert list(summary.columns) == ["Dataset", "W_F1", "AUROC", "BACC", "ACC", "AUPR"]
    y, p = preds["true_label"], preds["predicted_label"]
    assert summary["ACC"][0] == pytest.approx(round(accuracy_score(y, p), 4))
    assert summary["BACC"][0] == pytest.approx(round(balanced_accuracy_score(y, p), 4))
    assert summary["W_F1"][0] == pytest.approx(round(f1_score(y, p, average="weighted"), 4))
    assert (out / "confusion_matrix_pad-lp-ws0.jpg").is_file()

    # Independent features: the reference transform written from the spec, on torchvision directly.
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))])
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(resnet_ckpt, weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval()
    feats = {}
    with torch.no_grad():
        for split in ("train", "test"):
            rows = frame[frame["split"] == split]
            x = torch.stack([tf(Image.open(HAM.parent / f).convert("RGB")) for f in rows["image_path"]])
            feats[split] = (model(x).numpy(), rows["label"].to_numpy())
    ref = run_linear_probe(feats["train"][0], feats["train"][1], feats["test"][0], feats["test"][1],
                           percent_data=0.5, n_bootstrap=0, n_classes=7)
    np.testing.assert_allclose(preds[[f"probability_class_{k}" for k in range(7)]].to_numpy(), ref["runs"][0]["probs"],
                               atol=2e-4)

    # A rerun keeps the header (the reference drops it).
    r2 = subprocess.run([sys.executable, "linear_probe/linear_eval.py", "--csv_path", str(csv), "--csv_filename",
                         "ResNet_PAD_results.csv", "--image_key", "filename", "--root_path", str(HAM.parent), "--model",
                         "torchvision:resnet18", "--checkpoint", str(resnet_ckpt), "--device", "cpu",
                         "--num_workers", "0", "--output_dir", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r2.returncode == 0, r2.stderr
    assert pd.read_csv(out / "ResNet_PAD_results.csv").columns[0] == "Dataset"


def test_cli_fractions_and_seeds(tiny_openclip, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "panderm", "linear-probe", "--model", f"local-dir:{tiny_openclip}",
                        "--csv", str(PAD), "--percent-data", "0.3", "1.0", "--seeds", "3", "--bootstrap", "20",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["n_classes"] == 6 and len(res["runs"]) == 6
    accs = [run["metrics"]["accuracy"] for run in res["runs"] if run["percent"] == 0.3]
    assert res["summary"]["0.3"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert res["summary"]["0.3"]["accuracy"]["std"] == pytest.approx(np.std(accs))
    assert (out / "predictions" / "percent_0.3_seed0.csv").is_file()
    assert res["provenance"]["kind"] == "embed"  # stock open_clip: the reference probes projected features
    # The CLI stops at the fast tolerance by default; --solver reference restores the reference's rule.
    assert res["provenance"]["solver"] == "fast" and {run["tol"] for run in res["runs"]} == {1e-5}
    ref_out = tmp_path / "ref"
    r = subprocess.run([sys.executable, "-m", "panderm", "linear-probe", "--model", f"local-dir:{tiny_openclip}",
                        "--csv", str(PAD), "--percent-data", "1.0", "--bootstrap", "0", "--solver", "reference",
                        "--out", str(ref_out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    ref = json.loads((ref_out / "results.json").read_text())
    assert ref["runs"][0]["tol"] is None and ref["provenance"]["solver"] == "reference"
    fast_run = next(run for run in res["runs"] if run["percent"] == 1.0 and run["seed"] == 0)
    assert fast_run["n_evals"] <= ref["runs"][0]["n_evals"]
    assert fast_run["train_loss"] == pytest.approx(ref["runs"][0]["train_loss"], abs=1e-4)


def test_missing_split_column_and_class_missing_from_train(tiny_openclip, tmp_path):
    frame = pd.read_csv(PAD)
    bad = tmp_path / "nosplit.csv"
    frame.drop(columns=["split"]).assign(image_path=[str(PAD.parent / p) for p in frame["image_path"]]).to_csv(bad, index=False)
    r = subprocess.run([sys.executable, "-m", "panderm", "linear-probe", "--model", f"local-dir:{tiny_openclip}",
                        "--csv", str(bad), "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "column 'split' not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
