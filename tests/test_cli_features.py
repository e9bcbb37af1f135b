"""`panderm features` and the reference export door, run as a user runs them (a subprocess) or, for the
checks that need no fresh process, through the command's own `main(argv)` in this process."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms as T

from reference_cae import tower_outputs

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd or REPO)


def panderm(*args):
    return run("-m", "panderm", *args)


def panderm_here(*args):
    """`panderm ARGS` through `panderm.cli.main` in this process: its exit code, stdout and stderr."""
    from panderm.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


def reference_preprocess(path, size):
    # Written from the spec: Resize(short side, bicubic) → CenterCrop → RGB → ToTensor → Normalize(OpenAI).
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    img = Image.open(path)
    img.draft("RGB", (2 * size, 2 * size))  # `panderm features` decodes JPEGs at the smallest scale >= 2x the input
    return tf(img.convert("RGB"))


@pytest.mark.parametrize("kind,ref_key", [("embed", "embed"), ("features", "pooled_double"), ("tokens", "cls")])
def test_features_cli_matches_reference_tower_on_real_images(tiny_panderm2, ham_csv, tmp_path, kind, ref_key):
    out = tmp_path / "f.npy"
    r = panderm_here("features", "--model", f"local-dir:{tiny_panderm2}", "--csv", str(ham_csv), "--kind", kind,
                     "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    feats = np.load(out)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["n"] == 70 and meta["kind"] == kind and meta["d"] == feats.shape[1]
    assert meta["model"]["random_init"] is False and len(meta["csv_sha256"]) == 64
    import pandas as pd

    paths = [ham_csv.parent / p for p in pd.read_csv(ham_csv)["image_path"]]
    x = torch.stack([reference_preprocess(p, 32) for p in paths])
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    ref = tower_outputs(sd, x, heads=2)[ref_key].numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4)


def test_second_run_is_served_from_cache(tiny_openclip, ham_csv, tmp_path):
    args = ["features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--cache-dir",
            str(tmp_path / "cache"), "--normalize"]
    first = panderm_here(*args, "--out", str(tmp_path / "a.npy"))
    second = panderm_here(*args, "--out", str(tmp_path / "b.npy"))
    assert first.returncode == 0 and second.returncode == 0
    assert "served from cache" not in first.stdout and "features served from cache" in second.stdout
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_demo_model_says_it_is_random(ham_csv, tmp_path):
    r = panderm("features", "--model", "demo", "--csv", str(ham_csv), "--out", str(tmp_path / "d.npy"))
    assert r.returncode == 0, r.stderr
    assert "RANDOM WEIGHTS" in r.stdout
    assert "RANDOM WEIGHTS" in json.loads((tmp_path / "d.json").read_text())["warning"]


def _assert_clean_failure(r, *needles, out=None):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    last = [line for line in r.stderr.strip().splitlines() if line.strip()][-1]
    assert last.startswith("panderm: error:") or "error:" in last
    for n in needles:
        assert n in last, last
    if out is not None:
        assert not Path(out).exists() and not Path(out).with_suffix(".json").exists()


def test_bad_inputs_fail_with_one_line(tiny_openclip, tiny_panderm2, ham_csv, tmp_path):
    out = tmp_path / "o.npy"
    base = ["features", "--csv", str(ham_csv), "--out", str(out)]
    _assert_clean_failure(panderm_here(*base, "--model", "not-a-model"), "unknown model id 'not-a-model'", out=out)
    _assert_clean_failure(panderm_here(*base, "--model", "PanDerm-L", "--checkpoint", str(tmp_path / "none.pth")),
                          "checkpoint file not found", out=out)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text((tiny_panderm2 / "open_clip_config.json").read_text())
    sd = load_file(str(tiny_panderm2 / "open_clip_model.safetensors"))
    sd.pop("visual.blocks.1.gamma_2")
    from safetensors.torch import save_file

    save_file(sd, str(broken / "open_clip_model.safetensors"))
    _assert_clean_failure(panderm_here(*base, "--model", f"local-dir:{broken}"), "missing 1 key(s): visual.blocks.1.gamma_2",
                          out=out)
    _assert_clean_failure(panderm_here(*base, "--model", f"local-dir:{tiny_openclip}", "--image-col", "filename"),
                          "column 'filename' not found", out=out)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _assert_clean_failure(panderm_here("features", "--model", "demo", "--csv", str(empty), "--out", str(out)), "CSV is empty", out=out)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("image_path\n" + f"{ham_csv.parent / 'images' / 'ISIC_0024354.jpg'}\nmissing1.jpg\nmissing2.jpg\n")
    _assert_clean_failure(panderm_here("features", "--model", "demo", "--csv", str(bad_csv), "--out", str(out), "--allow-absolute-paths"),
                          "missing1.jpg [missing]", "missing2.jpg [missing]", out=out)


def test_existing_output_survives_a_failed_run(ham_csv, tmp_path):
    out = tmp_path / "keep.npy"
    np.save(out, np.ones((2, 2), np.float32))
    r = panderm_here("features", "--csv", str(ham_csv), "--out", str(out), "--model", "nope")
    assert r.returncode != 0
    assert np.array_equal(np.load(out), np.ones((2, 2), np.float32))


def test_reference_export_door_writes_normalised_embeddings(tiny_openclip, ham_csv, tmp_path):
    import pandas as pd

    frame = pd.read_csv(ham_csv).rename(columns={"image_path": "ImageID"})
    csv = tmp_path / "meta.csv"
    frame.to_csv(csv, index=False)
    r = run("src/export_visual_features.py", "--model_name", f"local-dir:{tiny_openclip}", "--csv_path", str(csv),
            "--img_col", "ImageID", "--data_root", str(ham_csv.parent), "--device", "cpu", "--num_workers", "0",
            "--output_dir", str(tmp_path / "emb"))
    assert r.returncode == 0, r.stderr
    emb = np.load(tmp_path / "emb" / "all_embeddings.npy")
    assert emb.shape == (70, 32) and emb.dtype == np.float32
    from panderm.features import extract_features
    from panderm.models import load_encoder

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    raw = extract_features(enc, [ham_csv.parent / p for p in frame["ImageID"]], cache=False, num_workers=0).array
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_reference_doors_ignore_exif_orientation_as_the_reference(tiny_openclip, ham_csv, tmp_path):
    """The reference's PIL loaders never read the EXIF orientation tag: the export door (and the zero-shot and
    probe doors' specs) keep the stored pixels, while `panderm features` shows the image upright."""
    import dataclasses

    import pandas as pd

    from panderm.compat.main_door import reference_preprocess
    from panderm.features import extract_features
    from panderm.models import REFERENCE_LP_PREPROCESS, load_encoder

    src = Image.open(ham_csv.parent / pd.read_csv(ham_csv)["image_path"][0]).convert("RGB")
    stored = np.asarray(src)[:, 40:]  # not square, so a rotation changes the crop
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    (tmp_path / "img").mkdir()
    img.save(tmp_path / "img" / "tagged.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "img" / "stored.png")
    Image.fromarray(np.rot90(stored, k=-1).copy()).save(tmp_path / "img" / "upright.png")
    pd.DataFrame({"ImageID": ["tagged.png"]}).to_csv(tmp_path / "one.csv", index=False)

    from panderm.compat.export_door import main as export_door  # in this process (the door's subprocess smoke
    # test is test_reference_export_door_writes_normalised_embeddings)

    with contextlib.redirect_stdout(io.StringIO()):
        rc = export_door(["--model_name", f"local-dir:{tiny_openclip}", "--csv_path", str(tmp_path / "one.csv"),
                          "--img_col", "ImageID", "--data_root", str(tmp_path / "img"), "--device", "cpu",
                          "--num_workers", "0", "--output_dir", str(tmp_path / "emb")])
    assert rc == 0
    door = np.load(tmp_path / "emb" / "all_embeddings.npy")
    enc = load_encoder(f"local-dir:{tiny_openclip}")

    def embed(name):
        x = np.asarray(extract_features(enc, [tmp_path / "img" / name], cache=False, num_workers=0).array)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    np.testing.assert_allclose(door, embed("stored.png"), atol=1e-5)
    assert np.abs(door - embed("upright.png")).max() > 1e-3
    np.testing.assert_allclose(embed("tagged.png"), embed("upright.png"), atol=1e-5)  # panderm: upright
    assert REFERENCE_LP_PREPROCESS.exif_transpose is False
    reference_preprocess(f"local-dir:{tiny_openclip}", enc)
    assert enc.preprocess_spec == dataclasses.replace(load_encoder(f"local-dir:{tiny_openclip}").preprocess_spec,
                                                      exif_transpose=False)


def test_debug_flag_works_after_the_subcommand_too(tmp_path):
    """`panderm features ... --debug` keeps the traceback (raises) like `panderm --debug features ...`."""
    from panderm.cli import main
    from panderm.errors import DataError

    argv = ["features", "--model", "demo", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.npy")]
    assert main(argv) == 2  # one line, exit 2
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(DataError, match="CSV not found"):
            main(debug_argv)
