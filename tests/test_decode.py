"""Reduced-size JPEG decoding (issue 17): on by default in `panderm` and the API, off in the doors and with
--full-decode; the smallest DCT scale still >= 2x the model input; part of the cache key and of results.json."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.cli import main
from panderm.data.images import open_image
from panderm.models.base import PreprocessSpec

REPO = Path(__file__).resolve().parents[1]
PH2 = REPO / "data" / "sample" / "ph2"


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory):
    """Bundled real PH2 images enlarged to 1600 x 1200 (the size of a dermoscopy archive's photos)."""
    folder = tmp_path_factory.mktemp("large")
    names = []
    for i, rel in enumerate(pd.read_csv(PH2 / "ph2.csv")["image_path"][:6]):
        with Image.open(PH2 / rel) as img:
            img.convert("RGB").resize((1600, 1200), Image.LANCZOS).save(folder / f"l{i}.jpg", quality=92)
        names.append(f"l{i}.jpg")
    pd.DataFrame({"image_path": names, "label": [0, 1] * 3}).to_csv(folder / "large.csv", index=False)
    return folder


def test_draft_size_is_twice_the_resize_target():
    assert PreprocessSpec(size=224).draft_size is None  # the library default decodes fully
    assert PreprocessSpec(size=224, draft_decode=True).draft_size == 448
    assert PreprocessSpec(size=224, resize_to=256, draft_decode=True).draft_size == 512


@pytest.mark.parametrize("target, expected", [(128, (200, 150)), (448, (800, 600)), (1200, (1600, 1200))])
def test_the_decoder_picks_the_smallest_scale_still_at_least_the_target(large_jpegs, target, expected):
    # 1600 x 1200: 1/8 -> 150 px short side (>= 128), 1/2 -> 600 (>= 448 while 1/4 -> 300 is not), 1/1 for 1200
    assert open_image(large_jpegs / "l0.jpg", draft=target).size == expected


def _features(tmp_path, large_jpegs, name, *extra):
    out = tmp_path / f"{name}.npy"
    assert main(["features", "--model", "demo", "--csv", str(large_jpegs / "large.csv"), "--device", "cpu",
                 "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *extra]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    return np.load(out), meta


def test_cli_default_is_reduced_full_decode_opts_out_and_the_cache_keeps_them_apart(tmp_path, large_jpegs):
    reduced, meta_r = _features(tmp_path, large_jpegs, "reduced")
    entries = set((tmp_path / "cache").glob("*.npy"))
    full, meta_f = _features(tmp_path, large_jpegs, "full", "--full-decode")
    assert '"draft_decode": true' in json.dumps(meta_r) and '"draft_decode": false' in json.dumps(meta_f)
    assert not meta_f["from_cache"]
    assert len(set((tmp_path / "cache").glob("*.npy")) - entries) == len(entries)  # new entries: the mode is keyed
    assert not np.array_equal(reduced, full)  # the decode really differed ...
    cos = (reduced * full).sum(1) / np.linalg.norm(reduced, axis=1) / np.linalg.norm(full, axis=1)
    print(f"cosine reduced vs full decode: min {cos.min():.6f}")
    assert cos.min() >= 0.9998  # ... and the features stay within the stated bound

    # the reference door decodes fully: its (L2-normalised) features are the --full-decode ones
    sys.path.insert(0, str(REPO / "src"))
    try:
        import export_visual_features as door
    finally:
        sys.path.remove(str(REPO / "src"))
    assert door.main(["--model_name", "demo", "--csv_path", str(large_jpegs / "large.csv"), "--img_col",
                      "image_path", "--data_root", str(large_jpegs), "--device", "cpu", "--num_workers", "0",
                      "--output_dir", str(tmp_path / "door")]) == 0
    door_feats = np.load(tmp_path / "door" / "all_embeddings.npy")
    unit = full / np.linalg.norm(full, axis=1, keepdims=True)
    np.testing.assert_allclose(door_feats, unit, atol=1e-6)


def test_zeroshot_results_record_the_decode_mode(tmp_path, large_jpegs):
    out = tmp_path / "zs"
    assert main(["zeroshot", "--model", "demo", "--csv", str(large_jpegs / "large.csv"), "--classnames",
                 "nevus,melanoma", "--bootstrap", "0", "--device", "cpu", "--workers", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["provenance"]["model"]["preprocess"]["draft_decode"] is True


def test_api_default_and_full_decode():
    from panderm import PanDerm2

    assert PanDerm2.from_pretrained("demo", device="cpu").encoder.preprocess_spec.draft_decode is True
    assert PanDerm2.from_pretrained("demo", device="cpu", full_decode=True).encoder.preprocess_spec.draft_decode \
        is False
