"""Retrieval through the doors: reference keys vs a brute-force computation, reports, bad input."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import in_process
from panderm.cli import main as panderm_main  # in this process; the processes are smoke-tested elsewhere
from panderm.compat.main_door import main as main_door
from panderm.errors import DataError
from panderm.tasks.retrieval.data import load_pairs

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
    r = in_process.run(main_door, ["--val-data", str(csv), "--dataset-type", "csv",
                        "--csv-img-key", "filename", "--csv-caption-key", "caption", "--model",
                        f"local-dir:{tiny_openclip}", "--device", "cpu", "--workers", "0", "--batch-size", "16",
                        "--precision", "fp32", "--logs", str(logs), "--name", "ret",
                        "--parent-path", str(tmp_path / "nowhere") + "/"])  # zero-shot CSVs only, as the reference
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
    r = in_process.run(panderm_main, ["retrieval", "--model", f"local-dir:{tiny_openclip}",
                                      "--csv", str(PH2), "--caption-col", "concept_text", "--out", str(out),
                                      "--bootstrap", "20"])
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


# --------------------------------------------------------------------------- repeated captions (issue 13)
REFERENCE_KEYS = [f"{d}_{k}" for d in ("image_to_text", "text_to_image")
                  for k in ("mean_rank", "median_rank", "R@5", "R@10", "R@50")] + ["clip_val_loss", "epoch",
                                                                                  "num_samples"]


def reference_evaluate(model_dir, image_paths, captions, batch_size, amp):
    """The reference's `src/main.py --val-data` numbers, restated from open_clip_train's evaluate and
    get_clip_metrics (docs/REFERENCE.md, Retrieval) on open_clip's own model, independently of the door's code.

    How the numbers are obtained: pairs in loader batches of `batch_size`; per batch, under
    torch.autocast("cpu", float16) for `--precision amp` (get_autocast with the device's type; none for fp32),
    model(images, texts) gives L2-normalised features (float16 under that autocast) and logit_scale.exp();
    the batch's symmetric cross-entropy of s · I_b @ T_bᵀ, weighted by the batch size, is summed into a tensor.
    Then, outside the autocast, the full N x N matrix s · I @ Tᵀ (in the features' dtype), each row of it and
    of its transpose ordered by torch.argsort(descending=True); the rank is where the ground truth lands.
    """
    import open_clip
    from torchvision import transforms as T

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", output_dict=True)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    tf = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                    T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    autocast = (lambda: torch.autocast("cpu", dtype=torch.float16)) if amp else contextlib.nullcontext
    images, texts, cumulative, n = [], [], 0.0, 0
    with torch.inference_mode():
        for a in range(0, len(captions), batch_size):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in image_paths[a:a + batch_size]])
            ids = tokenizer(captions[a:a + batch_size])
            with autocast():
                out = model(x, ids)
                images.append(out["image_features"])
                texts.append(out["text_features"])
                scale = out["logit_scale"].mean()
                logits = scale * out["image_features"] @ out["text_features"].t()
                labels = torch.arange(len(x))
                loss = (torch.nn.functional.cross_entropy(logits, labels)
                        + torch.nn.functional.cross_entropy(logits.t(), labels)) / 2
            cumulative += loss * len(x)
            n += len(x)
        logits = scale * torch.cat(images) @ torch.cat(texts).t()
        keys, stable = {}, {}
        for name, mat in (("image_to_text", logits), ("text_to_image", logits.t())):
            r = torch.where(torch.argsort(mat, descending=True) == torch.arange(n).view(-1, 1))[1].numpy()
            keys[f"{name}_mean_rank"] = r.mean() + 1
            keys[f"{name}_median_rank"] = np.floor(np.median(r)) + 1
            for k in (5, 10, 50):
                keys[f"{name}_R@{k}"] = np.mean(r < k)
            # The door's old rule on the same scores: ties broken by row order (a stable sort).
            order = np.argsort(-mat.float().numpy(), axis=1, kind="stable")
            stable[name] = np.array([np.flatnonzero(order[q] == q)[0] for q in range(n)])
    keys.update({"clip_val_loss": (cumulative / n).item(), "epoch": 0, "num_samples": n})
    return keys, stable


@pytest.mark.parametrize("precision", ["amp", "fp32"])
def test_main_py_retrieval_with_repeated_captions_equals_the_reference(tiny_openclip, tmp_path, precision):
    """72 pairs, 6 distinct captions (each caption 12 times), `--batch-size 24`, on CPU: the door's 13 reference
    keys equal `reference_evaluate` (above). The reference orders equal scores by torch.argsort, not by row
    order: the door's old stable rule (and its float32 scores under amp, its 256-text batches) moved the
    image-to-text ranks of this set."""
    frame = pd.read_csv(PH2).iloc[:72]
    captions = ["melanoma", "common nevus", "atypical nevus with dots and globules", "blue whitish veil",
                "regression areas", "a dark brown lesion"]
    frame["caption"] = [captions[i % len(captions)] for i in range(len(frame))]
    paths = [str(PH2.parent / p) for p in frame["image_path"]]
    csv = tmp_path / "pairs.csv"
    frame.assign(filename=paths).to_csv(csv, index=False)
    logs = tmp_path / "logs"
    r = in_process.run(main_door, ["--val-data", str(csv), "--dataset-type", "csv",
                        "--csv-img-key", "filename", "--csv-caption-key", "caption", "--model",
                        f"local-dir:{tiny_openclip}", "--device", "cpu", "--workers", "0", "--batch-size", "24",
                        "--precision", precision, "--logs", str(logs), "--name", "ret", "--no-cache"])
    assert r.returncode == 0, r.stderr
    got = json.loads((logs / "ret" / "checkpoints" / "results.jsonl").read_text())
    ref, stable = reference_evaluate(tiny_openclip, paths, frame["caption"].tolist(), 24, precision == "amp")
    assert list(got)[:13] == REFERENCE_KEYS
    for key in REFERENCE_KEYS:
        assert got[key] == ref[key], key
    # Row-order tie breaking gives other image-to-text ranks on these scores (the old door's rule).
    assert stable["image_to_text"].mean() + 1 != ref["image_to_text_mean_rank"]


def test_door_ranks_block_by_block_only_when_the_full_matrix_does_not_fit(tiny_openclip, tmp_path, caplog):
    """The reference's N x N argsort while it takes at most half the free memory; above that the block-wise count
    (ties by row order) with one warning naming the size. Both give the same ranks where no scores tie."""
    from panderm.models import load_encoder
    from panderm.tasks.retrieval import argsort_bytes, argsort_fits
    from panderm.tasks.retrieval.pipeline import ReferenceSettings, reference_result

    assert argsort_bytes(1000, 4) == 20_000_000
    assert argsort_fits(1000, 4, available=40_000_000) and not argsort_fits(1000, 4, available=39_999_999)
    frame = pd.read_csv(PH2).iloc[:30]
    frame["caption"] = frame["concept_text"] + " " + frame["image_id"]  # unique captions: no ties
    csv = tmp_path / "pairs.csv"
    frame.assign(filename=[str(PH2.parent / p) for p in frame["image_path"]]).to_csv(csv, index=False)
    pairs = load_pairs(csv, "filename", "caption", allow_outside_root=True)
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    settings = ReferenceSettings(batch_size=8, workers=0, precision="fp32", cache=False)
    full, how = reference_result(enc, pairs, settings)
    assert how == "argsort" and "argsort needs" not in caplog.text
    blocks, how = reference_result(enc, pairs, settings, available_memory=2 * argsort_bytes(30, 4) - 1)
    assert how == "chunked" and "the reference's 30 x 30 argsort needs" in caplog.text
    np.testing.assert_array_equal(blocks.image_to_text_ranks, full.image_to_text_ranks)
    np.testing.assert_array_equal(blocks.text_to_image_ranks, full.text_to_image_ranks)
    assert blocks.metrics["clip_val_loss"] == full.metrics["clip_val_loss"]
