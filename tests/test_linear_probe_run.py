"""Linear probe through its doors, on real images."""
import contextlib
import io
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

from panderm.tasks.linear_probe.pipeline import reference_output_dir

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


@pytest.fixture(scope="module")
def reference_features(resnet_ckpt):
    """Independent features of every HAM row: the reference transform written from the spec, on torchvision
    directly (computed once; each percent takes its rows)."""
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))])
    model = torchvision.models.resnet18(weights=None)
    model.load_state_dict(torch.load(resnet_ckpt, weights_only=True))
    model.fc = torch.nn.Identity()
    model.eval()
    names = pd.read_csv(HAM)["image_path"].tolist()
    with torch.no_grad():
        feats = model(torch.stack([tf(Image.open(HAM.parent / f).convert("RGB")) for f in names])).numpy()
    return dict(zip(names, feats))


def _lp_door(argv) -> int:
    """linear_probe/linear_eval.py's main in this process (its process smoke test: test_bad_input_matrix)."""
    from panderm.compat.linear_probe_door import main

    return main(argv)


@pytest.mark.parametrize("percent", [1.0, 0.5])
def test_reference_door_files_and_numbers(resnet_ckpt, reference_features, tmp_path, percent, capsys):
    """The door's files and numbers equal the reference pipeline restated independently (tests/reference_lp.py)
    on the real HAM10000 sample, for p = 1.0 and p = 0.5."""
    import reference_lp

    csv = tmp_path / "pad-lp-ws0.csv"
    frame = pd.read_csv(HAM)
    frame.assign(filename=frame["image_path"]).to_csv(csv, index=False)
    out = tmp_path / "logs" / "open_clip_hf-hub:org" / "x"
    rc = _lp_door(["--csv_path", str(csv), "--csv_filename", "some/dir/ResNet_PAD_results.csv", "--image_key",
                   "filename", "--root_path", str(HAM.parent), "--model", "torchvision:resnet18", "--checkpoint",
                   str(resnet_ckpt), "--percent_data", str(percent), "--device", "cpu", "--num_workers", "0",
                   "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    out = Path(reference_output_dir(str(out)))
    assert out == tmp_path / "logs" / "x"
    preds = pd.read_csv(out / "pad-lp-ws0.csv")
    assert list(preds.columns) == ["filename", "true_label", "predicted_label"] + [f"probability_class_{k}" for k in range(7)]
    summary = pd.read_csv(out / "ResNet_PAD_results.csv")
    assert list(summary.columns) == ["Dataset", "W_F1", "AUROC", "BACC", "ACC", "AUPR"]
    assert (out / "confusion_matrix_pad-lp-ws0.jpg").is_file()

    def encode(rows):
        return np.stack([reference_features[f] for f in rows["image_path"]])

    train = reference_lp.train_rows(frame, percent)
    test = frame[frame["split"] == "test"]
    probs = reference_lp.fit_predict(encode(train), train["label"].to_numpy(), encode(test))
    np.testing.assert_allclose(preds[[f"probability_class_{k}" for k in range(7)]].to_numpy(), probs, atol=2e-4)
    assert preds["filename"].tolist() == test["image_path"].tolist()
    expected = reference_lp.summary(test["label"].to_numpy(), probs)
    for name, value in expected.items():
        assert summary[name][0] == pytest.approx(round(value, 4), abs=1e-4), name
    y, p = preds["true_label"], preds["predicted_label"]
    assert summary["ACC"][0] == pytest.approx(round(accuracy_score(y, p), 4))
    assert summary["BACC"][0] == pytest.approx(round(balanced_accuracy_score(y, p), 4))
    assert summary["W_F1"][0] == pytest.approx(round(f1_score(y, p, average="weighted"), 4))
    if percent != 1.0:
        return

    # A rerun keeps the header (the reference drops it).
    rc = _lp_door(["--csv_path", str(csv), "--csv_filename", "ResNet_PAD_results.csv", "--image_key", "filename",
                   "--root_path", str(HAM.parent), "--model", "torchvision:resnet18", "--checkpoint", str(resnet_ckpt),
                   "--device", "cpu", "--num_workers", "0", "--output_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert pd.read_csv(out / "ResNet_PAD_results.csv").columns[0] == "Dataset"


def test_cli_fractions_and_seeds(tiny_openclip, tmp_path):
    out = tmp_path / "run"
    from panderm.cli import main as panderm_main  # in this process; the subprocess run is the test below

    with contextlib.redirect_stdout(io.StringIO()):
        assert panderm_main(["linear-probe", "--model", f"local-dir:{tiny_openclip}", "--csv", str(PAD),
                             "--percent-data", "0.3", "1.0", "--seeds", "3", "--bootstrap", "20", "--out", str(out)]) == 0
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
    with contextlib.redirect_stdout(io.StringIO()):
        assert panderm_main(["linear-probe", "--model", f"local-dir:{tiny_openclip}", "--csv", str(PAD),
                             "--percent-data", "1.0", "--bootstrap", "0", "--solver", "reference",
                             "--out", str(ref_out)]) == 0
    ref = json.loads((ref_out / "results.json").read_text())
    assert ref["runs"][0]["tol"] is None and ref["provenance"]["solver"] == "reference"
    fast_run = next(run for run in res["runs"] if run["percent"] == 1.0 and run["seed"] == 0)
    # The fast rule holds at the end (results.json says so per fit); the reference's float32 run may stall
    # before it, so the fast loss is at most the reference's and close to it.
    assert all(run["converged"] is True and run["grad_max"] <= 1e-5 for run in res["runs"])
    assert ref["runs"][0]["converged"] is None
    assert fast_run["train_loss"] <= ref["runs"][0]["train_loss"] + 1e-6
    assert fast_run["train_loss"] == pytest.approx(ref["runs"][0]["train_loss"], abs=1e-3)


def test_missing_split_column_and_class_missing_from_train(tiny_openclip, tmp_path):
    frame = pd.read_csv(PAD)
    bad = tmp_path / "nosplit.csv"
    frame.drop(columns=["split"]).assign(image_path=[str(PAD.parent / p) for p in frame["image_path"]]).to_csv(bad, index=False)
    r = subprocess.run([sys.executable, "-m", "panderm", "linear-probe", "--model", f"local-dir:{tiny_openclip}",
                        "--csv", str(bad), "--allow-absolute-paths", "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "column 'split' not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def _door_module(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Stop(Exception):
    pass


def test_reference_doors_extract_in_float32_as_the_reference(resnet_ckpt, tiny_openclip, tiny_hf_clip, tmp_path,
                                                             monkeypatch):
    """The reference probe and export ran without autocast (MONET alone in fp16): the doors ask for that
    precision whatever the device, so CUDA runs match the reference's numbers."""
    import panderm.tasks.export as export
    import panderm.tasks.linear_probe.pipeline as lp
    from panderm.models import load_encoder

    assert lp.reference_precision(load_encoder(f"local-dir:{tiny_openclip}")) == "fp32"
    assert lp.reference_precision(load_encoder("hf-clip:test/tiny-monet")) == "amp"
    seen = {}

    def fake_run(*args, **kwargs):
        seen["lp"] = kwargs["extract_kw"]
        raise _Stop

    monkeypatch.setattr(lp, "run", fake_run)
    csv = tmp_path / "lp.csv"
    pd.read_csv(HAM).to_csv(csv, index=False)
    door = _door_module("linear_probe/linear_eval.py")
    with pytest.raises(_Stop):
        door.main(["--csv_path", str(csv), "--image_key", "image_path", "--root_path", str(HAM.parent), "--model",
                   "torchvision:resnet18", "--checkpoint", str(resnet_ckpt), "--device", "cpu", "--debug"])
    assert seen["lp"]["precision"] == "fp32"

    def fake_export(*args, **kwargs):
        seen["export"] = kwargs
        raise _Stop

    monkeypatch.setattr(export, "export_features", fake_export)
    door = _door_module("src/export_visual_features.py")
    with pytest.raises(_Stop):
        door.main(["--csv_path", str(csv), "--img_col", "image_path", "--data_root", str(HAM.parent), "--device",
                   "cpu", "--output_dir", str(tmp_path / "emb"), "--debug"])
    assert seen["export"]["precision"] == "fp32"


def test_reference_preprocess_on_a_64px_model_is_one_error_line(tmp_path, capsys):
    """demo takes 64 px, the reference transform crops 224 px: one line naming the way out, no traceback."""
    from panderm.cli import main

    rc = main(["linear-probe", "--csv", str(PAD), "--model", "demo", "--reference-preprocess",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "RuntimeError" not in err
    assert "demo takes 64-px input" in err and "crops 224 px" in err and "drop --reference-preprocess" in err
    assert not (tmp_path / "o").exists()
    door = _door_module("linear_probe/linear_eval.py")
    rc = door.main(["--csv_path", str(PAD), "--image_key", "image_path", "--root_path", str(PAD.parent), "--model",
                    "demo", "--device", "cpu", "--num_workers", "0", "--output_dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and "--model_preprocess" in err


def test_cli_text_labels_with_classnames(tmp_path, capsys):
    """--label-col dx holds names: --classnames maps them (in the given order) and names the classes."""
    from panderm.cli import main

    names = "mel,nv,bcc,akiec,bkl,df,vasc"  # the sample's label order
    common = ["linear-probe", "--csv", str(HAM), "--model", "demo", "--label-col", "dx", "--bootstrap", "0"]
    rc = main(common + ["--out", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc != 0 and "--classnames" in err and not (tmp_path / "none").exists()
    rc = main(common + ["--classnames", names, "--out", str(tmp_path / "dx")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "dx" / "results.json").read_text())
    assert res["classnames"] == names.split(",") and res["n_classes"] == 7
    # Same labels as the integer column: identical predictions.
    assert main(["linear-probe", "--csv", str(HAM), "--model", "demo", "--bootstrap", "0",
                 "--out", str(tmp_path / "int")]) == 0
    by_name = pd.read_csv(tmp_path / "dx" / "predictions" / "percent_1.0_seed0.csv")
    by_int = pd.read_csv(tmp_path / "int" / "predictions" / "percent_1.0_seed0.csv")
    cols = ["image_path", "label", "pred"]  # the names differ: class names vs indices
    pd.testing.assert_frame_equal(by_name[cols], by_int[cols])
    np.testing.assert_array_equal(by_name.filter(like="prob_").to_numpy(), by_int.filter(like="prob_").to_numpy())
    assert list(by_name.filter(like="prob_").columns) == [f"prob_{n}" for n in names.split(",")]
    assert (by_name["label_name"] == [names.split(",")[k] for k in by_name["label"]]).all()
    # Another order gives other indices.
    rc = main(common + ["--classnames", "vasc,df,bkl,akiec,bcc,nv,mel", "--out", str(tmp_path / "rev")])
    assert rc == 0
    rev = pd.read_csv(tmp_path / "rev" / "predictions" / "percent_1.0_seed0.csv")
    assert (rev["label"] == 6 - by_int["label"]).all()


def test_cli_few_shot_settings_warn_in_one_line_each(tmp_path, capsys, caplog):
    """HAM sample: 6 train images per class. 0.1 and 0.3 both keep 1 per class; --shots 10 keeps all 6."""
    import warnings

    from panderm.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with caplog.at_level("WARNING", logger="panderm"):
            assert main(["linear-probe", "--csv", str(HAM), "--model", "demo", "--percent-data", "0.1", "0.3",
                         "--bootstrap", "0", "--out", str(tmp_path / "p")]) == 0
            assert main(["linear-probe", "--csv", str(HAM), "--model", "demo", "--shots", "10", "--seeds", "2",
                         "--bootstrap", "0", "--out", str(tmp_path / "s")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 2, lines
    assert "percent_data 0.1 and 0.3" in lines[0] and "7 images, 1 per class" in lines[0]
    assert lines[1].startswith("linear probe: shots 10: 7 classes have fewer than 10 training images")
    assert "0 6, 1 6" in lines[1]
