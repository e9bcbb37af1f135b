"""transformers vision backbones (`hf-vision:`, DINOv3): hub-layout loading offline, the model's own preprocessing,
the reference's feature (pooler output), the reference door and the errors a user meets (gated repo, bad weights)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import in_process

from panderm.errors import ModelError
from panderm.features import extract_features
from panderm.models import load_encoder
from panderm.models.hf_vision import preprocess_from_config
from panderm.models.registry import resolve_alias
from panderm.tasks.linear_probe.pipeline import reference_feature

REPO = Path(__file__).resolve().parents[1]
HAM = REPO / "data" / "sample" / "ham10000_sample"


def ham_images(n=6):
    frame = pd.read_csv(HAM / "ham10000_sample.csv")
    return [HAM / p for p in frame["image_path"].head(n)]


def independent_pooler(folder, paths):
    """DINOv3 CLS after the final norm, with the preprocessing spelled out by hand from the processor config."""
    from transformers import DINOv3ViTModel

    cfg = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    size = (cfg["size"]["width"], cfg["size"]["height"])
    mean, std = np.array(cfg["image_mean"]), np.array(cfg["image_std"])
    batch = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize(size, Image.BILINEAR)
        arr = (np.asarray(img, dtype=np.float64) / 255.0 - mean) / std
        batch.append(arr.transpose(2, 0, 1))
    model = DINOv3ViTModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.tensor(np.stack(batch), dtype=torch.float32))
    return out.pooler_output.numpy(), out.last_hidden_state.numpy()


def test_hub_cache_load_and_features_equal_an_independent_forward(tiny_dinov3):
    enc = load_encoder("hf-vision:test/tiny-dinov3")
    assert enc.family == "hf_vision" and enc.model_id == "hf-vision:test/tiny-dinov3"
    spec = enc.preprocess_spec
    assert (spec.size, spec.resize_mode, spec.interpolation) == (32, "squash", "bilinear")
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    paths = ham_images()
    ours = extract_features(enc, paths, "features", batch_size=4, num_workers=0, cache=False).array
    pooled, tokens = independent_pooler(tiny_dinov3, paths)
    np.testing.assert_allclose(np.asarray(ours), pooled, atol=2e-5)
    # The token sequence: CLS + 2 register tokens + 16 patches; extraction keeps its CLS row.
    x = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths[:2]])
    with torch.no_grad():
        seq = enc.encode_image(x, "tokens").numpy()
    assert seq.shape == (2, 19, 32)
    np.testing.assert_allclose(seq, tokens[:2], atol=2e-5)
    cls = extract_features(enc, paths[:2], "tokens", batch_size=2, num_workers=0, cache=False).array
    np.testing.assert_allclose(np.asarray(cls), tokens[:2, 0], atol=2e-5)
    # `embed` is `features`: no joint space.
    emb = extract_features(enc, paths, "embed", batch_size=4, num_workers=0, cache=False).array
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(ours))
    assert reference_feature(enc) == ("features", False)


def test_folder_form_loads_the_same_weights_as_the_hub_form(tiny_dinov3):
    a = load_encoder(f"hf-vision:{tiny_dinov3}")
    b = load_encoder("hf-vision:test/tiny-dinov3")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(x, "features"), b.encode_image(x, "features"))


def test_dinov3_aliases_point_at_the_reference_repositories():
    assert resolve_alias("DINOv3-L16").model_id == "hf-vision:facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert resolve_alias("dinov3-l16").model_id == "hf-vision:facebook/dinov3-vitl16-pretrain-lvd1689m"
    assert resolve_alias("dinov3-7b").model_id == "hf-vision:facebook/dinov3-vit7b16-pretrain-lvd1689m"
    assert resolve_alias("dinov3-b16").model_id == "hf-vision:facebook/dinov3-vitb16-pretrain-lvd1689m"


def test_uncached_repository_offline_is_one_model_error():
    with pytest.raises(ModelError, match="hf-vision:facebook/dinov3-vitl16-pretrain-lvd1689m"):
        load_encoder("DINOv3-L16")


def test_weights_that_do_not_fit_the_architecture_are_rejected(tiny_dinov3, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad-dinov3"
    shutil.copytree(tiny_dinov3, bad)
    weights = load_file(bad / "model.safetensors")
    dropped = sorted(k for k in weights if k.endswith("norm.weight"))[-1]
    del weights[dropped]
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match="do not match .*missing"):
        load_encoder(f"hf-vision:{bad}")


def test_checkpoint_flag_is_refused():
    with pytest.raises(ModelError, match="a checkpoint is not used") as info:
        load_encoder("hf-vision:test/tiny-dinov3", checkpoint=__file__)
    assert info.value.param == "checkpoint" and info.value.drop


@pytest.mark.parametrize("cfg,expected", [
    ({"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 3},
     (224, 256, "shortest", "bicubic")),
    ({"size": {"height": 518, "width": 518}, "resample": 2}, (518, None, "squash", "bilinear")),
    ({}, (64, None, "squash", "bicubic")),
    # ViT / DINO processors: an int size is a square resize (transformers' default_to_square), an int crop too.
    ({"size": 224, "resample": 2}, (224, None, "squash", "bilinear")),
    ({"size": 256, "default_to_square": False, "crop_size": 224, "do_center_crop": None},
     (224, 256, "shortest", "bicubic")),
])
def test_processor_configs_map_to_the_same_transform(cfg, expected):
    spec = preprocess_from_config(cfg, default_size=64)
    assert (spec.size, spec.resize_to, spec.resize_mode, spec.interpolation) == expected


def test_reference_door_probes_the_pooler_output(tiny_dinov3, tmp_path):
    """linear_eval.py with a DINOv3 model: the reference's `model(x)['pooler_output']` feature, 32-d here."""
    csv = REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"
    out = tmp_path / "lp"
    from panderm.compat.linear_probe_door import main  # in this process; the door's process: test_bad_input_matrix

    r = in_process.run(main, ["--csv_path", csv, "--image_key", "image_path", "--root_path", csv.parent,
                              "--model", f"hf-vision:{tiny_dinov3}", "--device", "cpu", "--batch_size", "16",
                              "--output_dir", out])
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns) == ["Dataset", "W_F1", "AUROC", "BACC", "ACC", "AUPR"]
    assert (out / "confusion_matrix_pad_ufes20_sample.jpg").is_file()
    # The summary row is computed from the per-sample predictions the door wrote.
    preds = pd.read_csv(out / "pad_ufes20_sample.csv")
    assert table["ACC"].iloc[0] == pytest.approx((preds["true_label"] == preds["predicted_label"]).mean(), abs=1e-4)
