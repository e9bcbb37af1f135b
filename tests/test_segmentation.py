"""Segmentation (issue 15): metrics against an independent computation, mask validation, model taps,
and training on the bundled real PH2 images and expert masks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from panderm.errors import DataError
from panderm.tasks.segmentation import metrics as M
from panderm.tasks.segmentation.data import load_isic2018, load_seg_csv, percent_subset

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO / "data" / "sample" / "ph2"


# --------------------------------------------------------------------------- #
# Metrics: independent computation (sklearn on flattened masks; brute-force distances)
# --------------------------------------------------------------------------- #
def _sk(pred, truth):
    from sklearn.metrics import f1_score, jaccard_score

    p, t = pred.ravel().astype(int), truth.ravel().astype(int)
    return (f1_score(t, p, zero_division=0.0), jaccard_score(t, p, zero_division=0.0))


def _brute_hd95(p, t):
    def surface(m):
        pts = []
        h, w = m.shape
        for y, x in zip(*np.nonzero(m)):
            nb = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
            if any(not (0 <= a < h and 0 <= b < w) or not m[a, b] for a, b in nb):
                # a pixel on the image border keeps its value under scipy's erosion (border_value 0 → eroded)
                pts.append((y, x))
        return np.array(pts, dtype=float)

    sp, st = surface(p), surface(t)
    d = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return float(np.percentile(np.concatenate([d(sp, st), d(st, sp)]), 95))


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


CASES = {
    "overlap": (_disc(20, 24, 10, 10, 5), _disc(20, 24, 11, 12, 6)),
    "one_pixel_lesion": (np.pad(np.ones((1, 1), bool), ((4, 5), (6, 3))), np.pad(np.ones((2, 2), bool), ((4, 4), (6, 2)))),
    "empty_prediction": (np.zeros((10, 10), bool), _disc(10, 10, 5, 5, 2)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_dice_jaccard_hd95_match_independent(name):
    pred, truth = CASES[name]
    d, j = _sk(pred, truth)
    assert M.dice(pred, truth) == pytest.approx(d)
    assert M.jaccard(pred, truth) == pytest.approx(j)
    if pred.any():
        assert M.hd95(pred, truth) == pytest.approx(_brute_hd95(pred, truth))
    else:
        assert np.isnan(M.hd95(pred, truth))
    assert M.pixel_accuracy(pred, truth) == pytest.approx(np.mean(pred == truth))


def test_two_components_keep_the_largest():
    truth = _disc(30, 30, 10, 10, 6)
    pred = _disc(30, 30, 10, 10, 5) | _disc(30, 30, 25, 25, 2)  # a stray blob away from the lesion
    kept = M.largest_component(pred)
    assert kept.sum() == _disc(30, 30, 10, 10, 5).sum() and not kept[25, 25]
    d_raw, j_raw = _sk(pred, truth)
    d_lcc, j_lcc = _sk(kept, truth)
    s = M.score_image(pred.astype(np.uint8), truth.astype(np.uint8))
    assert s["dice"] == pytest.approx(d_lcc) and s["jaccard"] == pytest.approx(j_lcc)
    assert s["dice"] > d_raw and s["jaccard"] > j_raw
    raw = M.score_image(pred.astype(np.uint8), truth.astype(np.uint8), keep_largest=False)
    assert raw["jaccard"] == pytest.approx(j_raw)
    # 8-connectivity: diagonal neighbours are one component
    diag = np.eye(5, dtype=bool)
    assert M.largest_component(diag).sum() == 5


def test_empty_truth_gets_the_centre_pixel():
    truth = np.zeros((9, 11), np.uint8)
    centre = np.zeros((9, 11), bool)
    centre[4, 5] = True
    empty_pred = np.zeros_like(truth)
    s = M.score_image(empty_pred, truth)
    assert s["dice"] == 0.0 and s["jaccard"] == 0.0  # empty prediction misses the centre pixel
    hit = centre.astype(np.uint8)
    s = M.score_image(hit, truth)
    assert s["dice"] == pytest.approx(1.0) and s["jaccard"] == pytest.approx(1.0)
    other = np.zeros_like(truth)
    other[0:2, 0:2] = 1
    d, j = _sk(other.astype(bool), centre)
    s = M.score_image(other, truth)
    assert s["dice"] == pytest.approx(d) and s["jaccard"] == pytest.approx(j)
    # without the rule, an empty truth and an empty prediction score 0 (MedPy's dc)
    assert M.score_image(empty_pred, truth, empty_rule=False)["dice"] == 0.0


def test_summary_mean_and_ci():
    rows = [{"dice": v, "jaccard": v / 2, "hd95": (np.nan if i == 0 else v), "pixel_accuracy": 1.0}
            for i, v in enumerate([0.2, 0.4, 0.6, 0.8, 1.0])]
    s = M.summarize(rows, n_resamples=200, seed=0)
    assert s["dice"]["mean"] == pytest.approx(0.6)
    assert s["dice"]["ci_low"] <= 0.6 <= s["dice"]["ci_high"]
    assert s["hd95"]["mean"] == pytest.approx(0.7) and s["hd95"]["n_undefined"] == 1


# --------------------------------------------------------------------------- #
# Data validation: each bad mask is one line naming its row
# --------------------------------------------------------------------------- #
def _small_csv(tmp_path, n=4):
    frame = pd.read_csv(PH2 / "ph2.csv").head(n).copy()
    for col in ("image_path", "mask_path"):
        frame[col] = [str(PH2 / v) for v in frame[col]]
    frame["split"] = "train"
    return frame


def _one_line_error(tmp_path, frame, **kw):
    csv = tmp_path / "seg.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError) as info:
        load_seg_csv(csv, "train", **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bundled_ph2_masks_validate():
    for split, n in (("train", 120), ("val", 40), ("test", 40)):
        t = load_seg_csv(PH2 / "ph2.csv", split)
        assert len(t) == n and t.binary and t.num_classes == 2


def test_bad_masks_are_one_line_each(tmp_path):
    frame = _small_csv(tmp_path)
    bad = frame.copy()
    bad.loc[1, "mask_path"] = str(tmp_path / "nope.png")
    msg = _one_line_error(tmp_path, bad)
    assert "row 3" in msg and "missing" in msg

    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(small)
    bad = frame.copy()
    bad.loc[2, "mask_path"] = str(small)
    msg = _one_line_error(tmp_path, bad)
    assert "row 4" in msg and "12x10 differs" in msg

    three = tmp_path / "three.png"
    size = Image.open(frame.loc[0, "image_path"]).size
    arr = np.zeros(size[::-1], np.uint8)
    arr[:5, :5], arr[5:10, 5:10] = 1, 2
    Image.fromarray(arr).save(three)
    bad = frame.copy()
    bad.loc[0, "mask_path"] = str(three)
    msg = _one_line_error(tmp_path, bad, num_classes=2)
    assert "row 2" in msg and "values 2 outside the 2 classes" in msg

    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros(size[::-1] + (3,), np.uint8)).save(rgb)
    bad = frame.copy()
    bad.loc[0, "mask_path"] = str(rgb)
    msg = _one_line_error(tmp_path, bad)
    assert "row 2" in msg and "RGB mask" in msg

    bad = frame.copy()
    bad.loc[0, "mask_path"] = str(three)  # class ids read as a binary mask would be all background
    msg = _one_line_error(tmp_path, bad)
    assert "look like class ids" in msg or "values" in msg

    msg = _one_line_error(tmp_path, frame, num_classes=2)  # 0/255 masks with a class count
    assert "255" in msg and "binary mask needs no class count" in msg


def test_bad_mask_cli_line_before_model_loads(tmp_path, capsys):
    from panderm.cli import main

    frame = _small_csv(tmp_path)
    frame.loc[1, "mask_path"] = str(tmp_path / "nope.png")
    csv = tmp_path / "seg.csv"
    frame.to_csv(csv, index=False)
    rc = main(["segment", "train", "--model", "no-such-model", "--csv", str(csv), "--train-split", "train",
               "--val-split", "train", "--test-split", "", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "row 3" in err and "missing" in err


def test_isic2018_layout(tmp_path):
    for split in ("Training", "Validation"):
        (tmp_path / f"{split}_Data").mkdir()
        (tmp_path / f"{split}_GroundTruth").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "Training_Data" / f"ISIC_{i:07d}.jpg")
        m = np.zeros((8, 10), np.uint8)
        m[2:5, 3:6] = 255
        Image.fromarray(m).save(tmp_path / "Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png")
    t = load_isic2018(tmp_path, "train")
    assert t.ids == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    (tmp_path / "Training_GroundTruth" / "ISIC_0000001_segmentation.png").unlink()
    with pytest.raises(DataError, match="ISIC_0000001.jpg: mask .* \\[missing\\]"):
        load_isic2018(tmp_path, "train")


def test_percent_subset_is_seeded_and_sorted():
    t = load_seg_csv(PH2 / "ph2.csv", "train", check=False)
    a, b = percent_subset(t, 25, seed=3), percent_subset(t, 25, seed=3)
    assert a.ids == b.ids and len(a) == 30 and a.ids == sorted(a.ids)
    assert percent_subset(t, 25, seed=4).ids != a.ids
    shuffled = t.subset(list(reversed(range(len(t)))))
    assert percent_subset(shuffled, 25, seed=3).ids == a.ids


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def test_tap_indices_follow_the_reference():
    from panderm.tasks.segmentation.model import tap_indices

    assert tap_indices(24) == [7, 11, 15, 23]
    assert tap_indices(12) == [3, 5, 7, 11]


@pytest.mark.parametrize("which", ["panderm_v1", "openclip"])
def test_model_shapes_and_final_norm(which, tiny_panderm_v1, tiny_openclip):
    from panderm.models import load_encoder
    from panderm.tasks.segmentation.model import SegmentationModel

    enc = (load_encoder("PanDerm-L", checkpoint=str(tiny_panderm_v1)) if which == "panderm_v1"
           else load_encoder(f"local-dir:{tiny_openclip}"))
    model = SegmentationModel(enc, 2, 32, freeze_encoder=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 2, 32, 32)
    feats = model.taps(x, model.indices)
    assert [f.shape[-1] for f in model.neck(feats)] == [16, 8, 4, 2]
    if which == "panderm_v1":  # the last tap is the tower's LayerNormed token sequence (the `tokens` kind)
        tokens = enc.encode_image(x, "tokens")[:, 1:]
        assert torch.allclose(feats[-1].flatten(2).transpose(1, 2), tokens, atol=1e-5)
    assert not any(p.requires_grad for p in enc.parameters())


# --------------------------------------------------------------------------- #
# Training on the bundled PH2 images and expert masks
# --------------------------------------------------------------------------- #
def _baselines(val, size):
    """Val Jaccard (reference rules) of all-background and of a centred disc of the mean train lesion area."""
    train = load_seg_csv(PH2 / "ph2.csv", "train", check=False)
    from panderm.tasks.segmentation.data import read_mask

    def resized(t, i):
        return np.asarray(Image.fromarray(read_mask(t.masks[i], None)).resize((size, size), Image.NEAREST))

    area = np.mean([resized(train, i).mean() for i in range(len(train))])
    r = np.sqrt(area * size * size / np.pi)
    disc = _disc(size, size, (size - 1) / 2, (size - 1) / 2, r).astype(np.uint8)
    empty = np.zeros((size, size), np.uint8)
    truths = [resized(val, i) for i in range(len(val))]
    bg = np.mean([M.score_image(empty, t)["jaccard"] for t in truths])
    dj = np.mean([M.score_image(disc, t)["jaccard"] for t in truths])
    return bg, dj


def test_frozen_tiny_encoder_beats_trivial_baselines_on_ph2(tiny_openclip, tmp_path, two_torch_threads, capsys):
    from panderm.cli import main

    out = tmp_path / "run"
    rc = main(["segment", "train", "--model", f"local-dir:{tiny_openclip}", "--csv", str(PH2 / "ph2.csv"),
               "--freeze-encoder", "--epochs", "8", "--batch-size", "8", "--lr", "2e-3", "--head-channels", "32",
               "--bootstrap", "100", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    res = json.loads((out / "results.json").read_text())
    val = load_seg_csv(PH2 / "ph2.csv", "val", check=False)
    bg, disc = _baselines(val, 32)
    best = res["best_val_jaccard"]
    print(f"\nPH2 val Jaccard @32px: frozen tiny CLIP ViT + UPerNet {best:.4f} | all-background {bg:.4f} | "
          f"centred disc of mean area {disc:.4f}; test Jaccard {res['metrics_at_model_size']['jaccard']['mean']:.4f}"
          f" (at mask size {res['metrics_at_mask_size']['jaccard']['mean']:.4f})")
    assert best > bg and best > disc
    assert len(list((out / "predictions").glob("*.png"))) == 40 and (out / "overlay.png").is_file()
    pred = Image.open(next((out / "predictions").glob("*.png")))
    assert pred.mode == "L" and set(np.unique(np.asarray(pred))) <= {0, 255}
    assert set(res["metrics_at_model_size"]) == {"dice", "jaccard", "hd95", "pixel_accuracy"}
    assert "ci_low" in res["metrics_at_model_size"]["dice"]
    assert list(res)[-1] == "provenance" and "warning" not in res  # saved weights: no random-weights warning
    # `segment test` rescoring best.pt on the val split gives the best val Jaccard again
    rc = main(["segment", "test", "--model", f"local-dir:{tiny_openclip}", "--run", str(out), "--csv",
               str(PH2 / "ph2.csv"), "--split", "val", "--bootstrap", "0", "--out", str(tmp_path / "t"),
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "t" / "results.json").read_text())
    assert again["metrics_at_model_size"]["jaccard"]["mean"] == pytest.approx(best, abs=1e-6)


def test_sixteen_images_overfit(tiny_panderm_v1, tmp_path, two_torch_threads):
    from panderm.models import load_encoder
    from panderm.tasks.segmentation.train import SegConfig, Segmenter

    table = load_seg_csv(PH2 / "ph2.csv", "train").subset(range(16))
    enc = load_encoder("PanDerm-L", checkpoint=str(tiny_panderm_v1))
    cfg = SegConfig(epochs=40, batch_size=8, lr=1e-3, weight_decay=0.0, loss="ce+dice", augment="none",
                    image_size=32, head_channels=32, seed=0)
    seg = Segmenter(enc, cfg, tmp_path / "o", "cpu")
    fit = seg.fit(table, table)
    seg.load_weights(tmp_path / "o" / "best.pt")
    ev = seg.evaluate(table, n_bootstrap=0, native=False)
    dice = ev["at_model_size"]["dice"]["mean"]
    print(f"\n16 PH2 images, unfrozen tiny PanDerm v1 @32px: train Dice {dice:.4f} "
          f"(best val Jaccard {fit['best_val_jaccard']:.4f} at epoch {fit['best_epoch']})")
    assert dice >= 0.9


def test_resume_continues_to_the_same_weights(tiny_openclip, tmp_path, two_torch_threads):
    from panderm.models import load_encoder
    from panderm.tasks.segmentation.train import SegConfig, Segmenter

    table = load_seg_csv(PH2 / "ph2.csv", "train").subset(range(8))
    cfg = SegConfig(epochs=3, batch_size=4, image_size=32, head_channels=16, seed=1, freeze_encoder=True)

    def run(out, stop=None):
        seg = Segmenter(load_encoder(f"local-dir:{tiny_openclip}"), cfg, out, "cpu")
        return seg, seg.fit(table, table, resume=True, on_epoch=stop)

    _, full = run(tmp_path / "a")
    _, part = run(tmp_path / "b", stop=lambda e: e == 0)
    assert part["stopped_after_epoch"] == 0
    _, rest = run(tmp_path / "b")
    _, again = run(tmp_path / "a")  # already done: loads last.pt, trains nothing
    assert again["history"] == full["history"]
    from panderm.checkpoint_io import load_training_checkpoint

    ca = load_training_checkpoint(tmp_path / "a" / "last.pt", ["model"], "ck")["model"]
    cb = load_training_checkpoint(tmp_path / "b" / "last.pt", ["model"], "ck")["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    assert [h["val_jaccard"] for h in rest["history"]] == [h["val_jaccard"] for h in full["history"]]


def test_reference_door_smoke(tiny_panderm_v1, tmp_path, two_torch_threads, monkeypatch, capsys):
    import importlib.util

    from panderm.tasks.segmentation import train as T

    seen = []
    real = T.score_image

    def spy(pred, truth, k, keep_largest, empty_rule):
        seen.append((keep_largest, empty_rule))
        return real(pred, truth, k, keep_largest, empty_rule)

    monkeypatch.setattr(T, "score_image", spy)
    spec = importlib.util.spec_from_file_location("seg_run", REPO / "segmentation" / "run.py")
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    rc = door.main(["--csv", str(PH2 / "ph2.csv"), "--dataset", "PH2", "--model", "PanDerm-L", "--pretrained_path",
                    str(tiny_panderm_v1), "--smoke_test", "--img_size", "32", "--seed", "3", "--fold", "1",
                    "--save_dir", str(tmp_path), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "results_PH2_1_3.json").read_text())
    assert set(res) == {"Dsc", "Jac"} and 0 <= res["Jac"] <= res["Dsc"] <= 1
    assert seen and all(s == (True, True) for s in seen)  # largest component and empty-truth rule in the door
    rc = door.main(["--dataset", "HAM10000", "--parent_path", str(tmp_path), "--model", "PanDerm-L",
                    "--pretrained_path", str(tiny_panderm_v1), "--save_dir", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not supported" in err and "--dataset" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name,size,vit", [("timm:vit_tiny_patch16_224", 224, True), ("timm:resnet18", 64, False)])
def test_timm_vit_and_cnn_towers(name, size, vit):
    from panderm.models import load_encoder
    from panderm.tasks.segmentation.model import SegmentationModel

    enc = load_encoder(name, allow_random_init=True)
    model = SegmentationModel(enc, 3, 16, freeze_encoder=True).eval()
    assert model.taps.is_vit is vit
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3, size, size)


def test_cli_errors_name_the_segment_flag(tmp_path, capsys):
    from panderm.cli import main

    csv = Path(__file__).resolve().parents[1] / "data" / "sample" / "ph2" / "ph2.csv"
    rc = main(["segment", "train", "--model", "demo", "--csv", str(csv), "--num-classes", "300", "--device", "cpu",
               "--out", str(tmp_path / "seg")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "(set it with --num-classes)" in last, last


@pytest.mark.parametrize("field, value, cli_flag, door_flag", [
    ("epochs", 0, "--epochs", "--epochs"), ("batch_size", 0, "--batch-size", "--batch_size"),
    ("image_size", 8, "--image-size", "--img_size"), ("percent_data", 0.0, "--percent-data", "--percent"),
    ("loss", "l2", "--loss", None)])
def test_bad_settings_name_each_door_s_own_flag(field, value, cli_flag, door_flag):
    """SegConfig names the setting (`param`); `panderm segment` and segmentation/run.py name their own flags."""
    import dataclasses

    from panderm.cli import command_flags
    from panderm.cli.doors import door_flags
    from panderm.compat import segmentation_door
    from panderm.errors import PandermError
    from panderm.tasks.segmentation.train import SegConfig

    CLI_FLAGS = command_flags("segment", "train")
    DOOR_FLAGS = door_flags(segmentation_door.build_parser(""), segmentation_door.FLAGS)
    with pytest.raises(PandermError) as err:
        dataclasses.replace(SegConfig(), **{field: value}).check()
    assert err.value.param == field and "--" not in str(err.value) and str(value) in str(err.value)
    assert err.value.render(CLI_FLAGS).endswith(f"(set it with {cli_flag})")
    if door_flag:
        assert err.value.render(DOOR_FLAGS).endswith(f"(set it with {door_flag})")
