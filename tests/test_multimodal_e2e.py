"""Multimodal finetune end to end through the doors, on the bundled real PAD-UFES-20 sample.

PAD (C+M) uses real images and real metadata. The C+D+M run uses a Derm7pt-layout folder
whose clinical/dermoscopic pairs are ARTIFICIAL: two different real PAD clinical photos of
the same class are paired (PAD-UFES-20 has no dermoscopy). It tests wiring, not medicine.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from panderm.cli.multimodal import find_best_checkpoint
from panderm.compat.multimodal_door import reference_parser, run_reference
from panderm.tasks.multimodal.data import load_derm7pt, load_pad_ufes20
from panderm.tasks.multimodal.model import FusionConfig
from panderm.tasks.multimodal.train import METRIC_COLUMNS, PANDERM_METRIC_COLUMNS, MultimodalTrainer, TrainConfig
from panderm.tasks.multimodal.train import test_metrics as metrics_of

REPO = Path(__file__).resolve().parents[1]
PAD_DIR = REPO / "data" / "sample" / "pad_ufes20_sample"
PAD_CSV = PAD_DIR / "pad_ufes20_sample.csv"
RUN_FILES = sorted(["best.pt", "last.pt", "log.jsonl", "results.json", "detailed_predictions.csv",
                    "evaluation_metrics.csv", "confusion_matrix.png"])
SMALL = ["--hidden_dim", "64", "--num_head", "2", "--meta_num_head", "2", "--att_depth", "1",
         "--meta_att_depth", "1", "--fusion", "cross attention", "--meta_fusion_mode", "cross attention",
         "--out", "mlp", "--encoder_pool", "mean", "--cuda", "false", "--bootstrap", "0", "--allow_absolute_paths"]


def _pad_rows(counts=(("train", 16), ("val", 8), ("test", 8))) -> pd.DataFrame:
    raw = pd.read_csv(PAD_CSV)
    raw = pd.concat([raw[raw["split"] == s].head(n) for s, n in counts]).reset_index(drop=True)
    raw["image_path"] = [str(PAD_DIR / p) for p in raw["image_path"]]
    return raw


@pytest.fixture(scope="module")
def pad_small(tmp_path_factory) -> Path:
    csv = tmp_path_factory.mktemp("pad") / "pad_small.csv"
    _pad_rows().to_csv(csv, index=False)
    return csv


def _recomputed(pred: pd.DataFrame, eval_batch: int) -> dict:
    k = sum(c.startswith("probability_class_") for c in pred.columns)
    probs = pred[[f"probability_class_{i}" for i in range(k)]].to_numpy(np.float64)
    y = pred["true_label"].to_numpy()
    nll = -np.log(probs[np.arange(len(y)), y])
    loss = float(np.mean([nll[i:i + eval_batch].mean() for i in range(0, len(y), eval_batch)]))  # mean batch CE
    assert (pred["predicted_label"].to_numpy() == probs.argmax(1)).all()
    return metrics_of(y, probs, loss)


def _door(mode, argv, capsys):
    rc = run_reference(mode, [str(a) for a in argv])
    return rc, capsys.readouterr()


def test_pad_cm_door_end_to_end(tiny_panderm2, pad_small, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model_name", f"local-dir:{tiny_panderm2}", "--dataset", "pad", "--data_dir", pad_small,
              "--class_num", 6, "--use_cli", "--use_meta", "--use_text_encoder", *SMALL, "--batch_size", 8,
              "--output_dir", out]
    rc, cap = _door("train", [*common, "--epochs", 2, "--learning_rate", "1e-3"], capsys)
    assert rc == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    log = [pd.read_json(out / "log.jsonl", lines=True)]
    assert len(log[0]) == 2  # two epochs
    pred = pd.read_csv(out / "detailed_predictions.csv")
    assert len(pred) == 8 and (pred["derm_filename"] == pred["cli_filename"]).all()  # clinical in both slots
    metrics = pd.read_csv(out / "evaluation_metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    again = _recomputed(pred, eval_batch=4)
    for col in METRIC_COLUMNS:
        assert again[col] == pytest.approx(float(metrics[col].iloc[0]), rel=1e-5, abs=1e-6), col

    # test.py without --model_path finds best.pt in --output_dir and reproduces train.py's predictions
    before = pred.copy()
    rc, cap = _door("test", common, capsys)
    assert rc == 0, cap.err
    assert f"checkpoint: {out / 'best.pt'}" in cap.out and "Accuracy" in cap.out
    pd.testing.assert_frame_equal(pd.read_csv(out / "detailed_predictions.csv"), before)


def _artificial_derm7pt(root: Path, missing: str | None = None) -> Path:
    """Derm7pt layout from real PAD photos; clinic/derm are two photos of one class (artificial pairs)."""
    raw = pd.read_csv(PAD_CSV)
    diag = {"BCC": "basal cell carcinoma", "MEL": "melanoma", "NEV": "clark nevus", "SEK": "seborrheic keratosis",
            "ACK": "miscellaneous", "SCC": "miscellaneous"}
    rows = []
    for code, group in raw.groupby("diagnostic"):
        imgs = group["image_path"].tolist()
        for i in range(min(4, len(imgs) - 1)):
            rows.append({"clinic": str(PAD_DIR / imgs[i]), "derm": str(PAD_DIR / imgs[i + 1]),
                         "diagnosis": diag[code], "elevation": ["flat", "palpable"][i % 2],
                         "sex": ["female", "male"][i % 2], "location": group["region"].iloc[i].lower()})
    meta = pd.DataFrame(rows)
    if missing:
        meta.loc[2, missing] = str(root / "images" / "gone.jpg")
    (root / "meta").mkdir(parents=True)
    meta.to_csv(root / "meta" / "meta.csv", index=False)
    idx = np.arange(len(meta))
    parts = {"train_indexes.csv": idx[idx % 3 != 2], "valid_indexes.csv": idx[idx % 6 == 2],
             "test_indexes.csv": idx[idx % 6 == 5]}
    for name, ix in parts.items():
        pd.DataFrame({"indexes": ix}).to_csv(root / "meta" / name, index=False)
    return root


def test_cdm_door_on_artificial_pairs(tiny_panderm2, tmp_path, capsys):
    root = _artificial_derm7pt(tmp_path / "derm7pt")
    out = tmp_path / "run"
    common = ["--model_name", f"local-dir:{tiny_panderm2}", "--dataset", "derm7pt", "--data_dir", root,
              "--use_cli", "--use_derm", "--use_meta", "--use_text_encoder", *SMALL, "--batch_size", 8,
              "--output_dir", out]
    rc, cap = _door("train", [*common, "--epochs", 2, "--learning_rate", "1e-3", "--accum_freq", 2], capsys)
    assert rc == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    pred = pd.read_csv(out / "detailed_predictions.csv")
    assert (pred["derm_filename"] != pred["cli_filename"]).all()  # two images per case
    metrics = pd.read_csv(out / "evaluation_metrics.csv")
    again = _recomputed(pred, eval_batch=4)
    for col in METRIC_COLUMNS:
        if np.isnan(float(metrics[col].iloc[0])):
            assert np.isnan(again[col]), col
        else:
            assert again[col] == pytest.approx(float(metrics[col].iloc[0]), rel=1e-5, abs=1e-6), col
    trained = (out / "results.json").read_text()
    rc, cap = _door("test", [*common, "--full_report"], capsys)
    assert rc == 0, cap.err
    pd.testing.assert_frame_equal(pd.read_csv(out / "detailed_predictions.csv"), pred)
    # the test report goes beside the training run's results.json, which keeps best_epoch and the command
    assert sorted(p.name for p in out.iterdir()) == sorted([*RUN_FILES, "results_test.json"])
    assert (out / "results.json").read_text() == trained


def test_overfits_16_samples_and_best_checkpoint_reloads_exactly(tiny_panderm2, tmp_path):
    from panderm.models import load_encoder

    rows = _pad_rows((("train", 16),))
    rows = pd.concat([rows.assign(split="train"), rows.head(2).assign(split="val"), rows.assign(split="test")])
    csv = tmp_path / "pad16.csv"
    rows.to_csv(csv, index=False)
    table = load_pad_ufes20(csv, allow_outside_root=True)
    fc = FusionConfig(num_classes=6, use_cli=True, use_derm=False, use_meta=True, use_text_encoder=True,
                      num_head=2, meta_num_head=2, att_depth=1, meta_att_depth=1, out="mlp")
    cfg = TrainConfig(epochs=12, batch_size=16, lr=3e-3, monitor="loss", bootstrap=0, precision="fp32")
    encoder = load_encoder(f"local-dir:{tiny_panderm2}", device="cpu")
    a = MultimodalTrainer(encoder, table, fc, cfg, tmp_path / "run")  # full finetuning: encoders train too
    a.datasets["train"].transform.train = False  # the same 16 tensors every step: pure memorisation
    fit = a.fit()
    assert fit["history"][-1]["train_loss"] < 0.1 * fit["history"][0]["train_loss"]
    last = a.evaluate("test")  # the 16 training cases, with the weights after the last step
    assert (last["probs"].argmax(1) == last["labels"]).all()  # 16/16
    res_a = a.test()  # loads best.pt
    b = MultimodalTrainer(load_encoder(f"local-dir:{tiny_panderm2}", device="cpu"), table, fc, cfg,
                          tmp_path / "other")  # a fresh build, other random fusion weights before loading
    res_b = b.test(find_best_checkpoint(tmp_path / "run"))
    assert torch.equal(torch.from_numpy(res_a["probs"]), torch.from_numpy(res_b["probs"]))
    assert res_a["loss"] == res_b["loss"]
    if fit["best_epoch"] == len(fit["history"]) - 1:
        assert np.array_equal(res_a["probs"], last["probs"])


def test_find_best_checkpoint_reference_names(tmp_path):
    for name in ("bestacc_model_3.pth", "bestacc_model_12.pth", "notes.pth"):
        (tmp_path / name).write_bytes(b"x")
    assert find_best_checkpoint(tmp_path).name == "bestacc_model_12.pth"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert find_best_checkpoint(tmp_path).name == "best.pt"


def test_reference_flags():
    p = reference_parser("train")
    assert p.parse_args([]).data_path is None  # the reference's folder is filled in per dataset
    assert p.parse_args(["--cuda", "False"]).cuda is False  # a real boolean, unlike the reference's type=bool
    assert p.parse_args(["--cuda"]).cuda is True and p.parse_args(["--cuda", "1"]).cuda is True
    assert p.parse_args(["--dir_release", "x"]).data_path == "x" == p.parse_args(["--data_dir", "x"]).data_path
    assert p.parse_args(["--model_name", "hf-hub:a/b"]).model == "hf-hub:a/b"
    with pytest.raises(SystemExit):
        p.parse_args(["--cuda", "maybe"])
    assert reference_parser("test").parse_args([]).model_path is None


# -- bad input: one line naming the file, the column / the row ----------------------------

def test_pad_bad_inputs_name_the_row(tmp_path, capsys):
    raw = _pad_rows((("train", 4), ("val", 2), ("test", 2)))

    def door(frame):
        csv = tmp_path / "pad.csv"
        frame.to_csv(csv, index=False)
        rc, cap = _door("train", ["--dataset", "pad", "--data_dir", csv, "--output_dir", tmp_path / "o", "--allow_absolute_paths"], capsys)
        assert rc != 0 and len(cap.err.strip().splitlines()) == 1, cap.err
        return cap.err

    assert "column 'smoke' not found" in door(raw.drop(columns=["smoke"]))
    err = door(raw.assign(label=[0, 1, 2, 9, 0, 1, 2, 3]))
    assert "outside 0..5" in err and "row(s) 5" in err  # CSV rows as counted with the header as row 1
    gone = raw.copy()
    gone.loc[5, "image_path"] = str(tmp_path / "nowhere.jpg")
    err = door(gone)
    assert "nowhere.jpg" in err and "row 7 (clinical image" in err


@pytest.mark.parametrize("missing,kind", [("clinic", "clinical"), ("derm", "dermoscopic")])
def test_missing_image_in_either_modality_names_the_row(tmp_path, missing, kind):
    from panderm.errors import DataError

    root = _artificial_derm7pt(tmp_path / "d7", missing=missing)
    with pytest.raises(DataError, match=rf"gone\.jpg.*meta\.csv row 4 \({kind} image .*gone\.jpg\)"):
        load_derm7pt(root, allow_outside_root=True)


def test_cli_test_writes_the_full_report_unless_predictions_only(tiny_panderm2, pad_small, tmp_path):
    """`panderm multimodal test` writes metrics, plot and results.json by default (the door only predictions)."""
    from panderm.cli import main as panderm_main

    out = tmp_path / "run"
    common = ["--model", f"local-dir:{tiny_panderm2}", "--dataset", "pad", "--data-path", str(pad_small),
              "--allow-absolute-paths", "--class-num", "6", "--use-cli", "--use-meta", "--use-text-encoder",
              "--hidden-dim", "64", "--num-head", "2", "--meta-num-head", "2", "--att-depth", "1",
              "--meta-att-depth", "1", "--device", "cpu", "--batch-size", "8", "--bootstrap", "20",
              "--output-dir", str(out)]
    assert panderm_main(["multimodal", "train", *common, "--epochs", "1"]) == 0
    for name in ("detailed_predictions.csv", "evaluation_metrics.csv", "results.json"):
        (out / name).unlink()
    assert panderm_main(["multimodal", "test", *common]) == 0
    pred = pd.read_csv(out / "detailed_predictions.csv")
    metrics = pd.read_csv(out / "evaluation_metrics.csv")
    # panderm's schema (docs/OUTPUTS.md): label/pred/prob_<class name>, the metric registry's names
    assert list(metrics.columns) == list(PANDERM_METRIC_COLUMNS)
    names = json.loads((out / "results.json").read_text())["classnames"]
    probs = pred[[f"prob_{c}" for c in names]].to_numpy(np.float64)
    y = pred["label"].to_numpy()
    assert (pred["pred"].to_numpy() == probs.argmax(1)).all()
    assert list(pred["label_name"]) == [names[k] for k in y] and list(pred["pred_name"]) == [names[k] for k in pred["pred"]]
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    independent = {"accuracy": accuracy_score(y, probs.argmax(1)), "balanced_accuracy": balanced_accuracy_score(y, probs.argmax(1)),
                   "macro_f1": f1_score(y, probs.argmax(1), average="macro", labels=range(len(names)), zero_division=0),
                   "weighted_f1": f1_score(y, probs.argmax(1), average="weighted", labels=range(len(names)), zero_division=0)}
    for col, value in independent.items():
        assert float(metrics[col].iloc[0]) == pytest.approx(value, abs=1e-6), col
    nll = -np.log(probs[np.arange(len(y)), y])
    assert float(metrics["avg_test_loss"].iloc[0]) == pytest.approx(np.mean([nll[i:i + 4].mean() for i in range(0, len(y), 4)]), rel=1e-5)
    assert json.loads((out / "results.json").read_text())["metrics"]["sensitivity"] == pytest.approx(
        float(metrics["sensitivity"].iloc[0]), abs=1e-12)
    for name in ("detailed_predictions.csv", "evaluation_metrics.csv", "results.json"):
        (out / name).unlink()
    assert panderm_main(["multimodal", "test", *common, "--predictions-only"]) == 0
    assert (out / "detailed_predictions.csv").is_file() and not (out / "evaluation_metrics.csv").exists()
