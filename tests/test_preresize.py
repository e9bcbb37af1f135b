"""`panderm preresize`: resized copies of the real sample images, same layout, atomic, cheap to rerun."""
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.data.tables import load_table
from panderm.errors import DataError
from panderm.preresize import MANIFEST, preresize, recommended_size, target_size

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
CSVS = {"ham": SAMPLE / "ham10000_sample" / "ham10000_sample.csv",
        "pad": SAMPLE / "pad_ufes20_sample" / "pad_ufes20_sample.csv",
        "ph2": SAMPLE / "ph2" / "ph2.csv"}


def panderm(*args):
    return subprocess.run([sys.executable, "-m", "panderm", *args], capture_output=True, text=True, cwd=REPO)


def _subset_csv(tmp_path, name, rows, column="image_path"):
    """A CSV of the first `rows` rows of a sample, with its images copied under tmp_path/src (same layout)."""
    frame = pd.read_csv(CSVS[name]).head(rows)
    root = tmp_path / "src"
    for rel in frame[column]:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((CSVS[name].parent / rel).read_bytes())
    csv = tmp_path / f"{name}.csv"
    frame.to_csv(csv, index=False)
    return csv, root, list(frame[column])


def _pixels(path):
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def test_target_size_rule():
    assert target_size(4000, 3000, 448) == (597, 448)
    assert target_size(3000, 4000, 448) == (448, 597)
    assert target_size(1000, 1000, 448) == (448, 448)
    assert target_size(300, 200, 448) is None  # never upscaled
    assert target_size(448, 1000, 448) is None  # already at the size
    from panderm.models.base import REFERENCE_LP_PREPROCESS, PreprocessSpec

    assert recommended_size(PreprocessSpec(size=224)) == 448
    assert recommended_size(REFERENCE_LP_PREPROCESS) == 512  # Resize(256) → CenterCrop(224)


@pytest.mark.parametrize("name,expected", [("ham", {(128, 96)}), ("pad", {(96, 96)}),
                                           ("ph2", {(128, 96), (127, 96), (129, 96), (132, 96)})])
def test_exact_sizes_and_aspect_on_real_images(tmp_path, name, expected):
    out = tmp_path / "out"
    summary = preresize(CSVS[name], "image_path", out, size=96, workers=2)
    rel = list(pd.read_csv(CSVS[name])["image_path"])
    assert summary.n == len(rel) and summary.resized == len(rel) and summary.copied == summary.skipped == 0
    assert summary.bytes_after < summary.bytes_before
    sizes = set()
    for r in rel:
        with Image.open(CSVS[name].parent / r) as src, Image.open(out / r) as dst:
            assert dst.format == "JPEG" and dst.mode == "RGB"
            assert min(dst.size) == 96
            assert dst.size == target_size(*src.size, 96)
            # aspect kept to within one pixel's rounding of the long side
            assert abs(dst.size[0] / dst.size[1] - src.size[0] / src.size[1]) <= 0.5 / 96 + 1e-9
            sizes.add(dst.size)
    assert sizes <= expected and sizes & expected
    # the content is the source, resized (JPEG q95 noise only)
    first = CSVS[name].parent / rel[0]
    with Image.open(first) as src:
        ref = np.asarray(src.convert("RGB").resize(target_size(*src.size, 96), Image.Resampling.LANCZOS), np.float64)
    assert np.abs(_pixels(out / rel[0]) - ref).mean() < 2.0


def test_exif_rotated_input_gives_the_rotated_output(tmp_path):
    src_img = CSVS["ham"].parent / pd.read_csv(CSVS["ham"])["image_path"][0]
    raw = Image.open(src_img).convert("RGB")  # 256 × 192 landscape
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    raw.save(root / "images" / "rot.jpg", quality=98, exif=exif)
    csv = tmp_path / "rot.csv"
    csv.write_text("image_path\nimages/rot.jpg\n")
    preresize(csv, "image_path", tmp_path / "out", root=root, size=96, workers=0)
    with Image.open(tmp_path / "out" / "images" / "rot.jpg") as out:
        assert out.size == (96, 128)  # portrait: the rotation was applied
        assert out.getexif().get(0x0112, 1) == 1  # and no orientation tag is left to apply it twice
        got = np.asarray(out.convert("RGB"), np.float64)
    upright = np.asarray(raw.transpose(Image.Transpose.ROTATE_270).resize((96, 128), Image.Resampling.LANCZOS), np.float64)
    wrong_way = np.asarray(raw.transpose(Image.Transpose.ROTATE_90).resize((96, 128), Image.Resampling.LANCZOS), np.float64)
    assert np.abs(got - upright).mean() < 3.0
    assert np.abs(got - wrong_way).mean() > 3 * np.abs(got - upright).mean()


def test_small_images_are_copied_unchanged(tmp_path):
    out = tmp_path / "out"
    summary = preresize(CSVS["ham"], "image_path", out, size=448, workers=0)  # the sample is 256 × 192
    rel = list(pd.read_csv(CSVS["ham"])["image_path"])
    assert summary.copied == 70 and summary.resized == 0
    assert summary.bytes_after == summary.bytes_before
    assert all(filecmp.cmp(CSVS["ham"].parent / r, out / r, shallow=False) for r in rel)


def test_rerun_skips_up_to_date_copies_and_redoes_changed_ones(tmp_path):
    csv, root, rel = _subset_csv(tmp_path, "pad", 12)
    out = tmp_path / "out"
    first = preresize(csv, "image_path", out, root=root, size=96, workers=0)
    assert first.resized == 12
    mtimes = {r: (out / r).stat().st_mtime_ns for r in rel}
    again = preresize(csv, "image_path", out, root=root, size=96, workers=0)
    assert again.skipped == 12 and again.written == 0
    assert again.bytes_after == first.bytes_after
    assert {r: (out / r).stat().st_mtime_ns for r in rel} == mtimes
    # a source edited after its copy was made is redone, and only it
    later = (out / rel[3]).stat().st_mtime_ns + 5_000_000_000
    os.utime(root / rel[3], ns=(later, later))
    third = preresize(csv, "image_path", out, root=root, size=96, workers=0)
    assert third.written == 1 and third.skipped == 11
    # other settings redo everything
    fourth = preresize(csv, "image_path", out, root=root, size=64, workers=0)
    assert fourth.resized == 12 and fourth.skipped == 0
    with Image.open(out / rel[0]) as img:
        assert min(img.size) == 64
    assert (out / MANIFEST).is_file()


def test_layout_is_kept_so_features_run_with_root_out(tiny_openclip, tmp_path):
    out = tmp_path / "out"
    r = panderm("preresize", "--csv", str(CSVS["ham"]), "--out", str(out), "--size", "96", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "70 image(s): 70 written (70 resized" in r.stdout and "MB →" in r.stdout
    f = tmp_path / "f.npy"
    r = panderm("features", "--model", f"local-dir:{tiny_openclip}", "--csv", str(CSVS["ham"]), "--root", str(out),
                "--kind", "features", "--no-cache", "--device", "cpu", "--out", str(f))
    assert r.returncode == 0, r.stderr
    feats = np.load(f)
    assert feats.shape == (70, 64)
    from panderm.features import extract_features
    from panderm.models import load_encoder

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    copies = load_table(CSVS["ham"], "image_path", root=out).paths
    assert all(str(p).startswith(str(out)) for p in copies)
    direct = extract_features(enc, copies, "features", num_workers=0, cache=False).array
    np.testing.assert_allclose(feats, direct, atol=1e-5)


def test_missing_image_is_a_clear_error_with_its_row(tmp_path):
    csv, root, rel = _subset_csv(tmp_path, "ham", 3)
    (root / rel[1]).unlink()
    out = tmp_path / "out"
    r = panderm("preresize", "--csv", str(csv), "--root", str(root), "--out", str(out), "--size", "96")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("panderm: error:")
    assert f"row 3: {root / rel[1]} [missing]" in last
    assert not out.exists()  # validated before anything is written


def test_absolute_paths_are_refused_with_their_row(tmp_path):
    csv = tmp_path / "abs.csv"
    good = pd.read_csv(CSVS["ham"])["image_path"][0]
    csv.write_text(f"image_path\n{good}\n{CSVS['ham'].parent / good}\n")
    with pytest.raises(DataError, match=r"row\(s\) 3"):
        preresize(csv, "image_path", tmp_path / "out", root=CSVS["ham"].parent, size=96, workers=0)
    # A path leaving the root: refused the same way, without suggesting a flag preresize does not have.
    csv.write_text(f"image_path\n{good}\n../{CSVS['ham'].parent.name}/{good}\n")
    with pytest.raises(DataError, match=r"row\(s\) 3: image path .* is not under the image root") as err:
        preresize(csv, "image_path", tmp_path / "out", root=CSVS["ham"].parent, size=96, workers=0)
    assert "--allow-absolute-paths" not in str(err.value)
    from panderm.cli import FLAGS

    assert err.value.param == "image_root" and err.value.render(FLAGS).endswith("(set it with --root)")


def test_out_must_not_be_the_image_root(tmp_path):
    csv, root, _ = _subset_csv(tmp_path, "ham", 2)
    with pytest.raises(DataError, match="overwrite the originals"):
        preresize(csv, "image_path", root, root=root, size=96, workers=0)
    link = tmp_path / "link-to-root"
    link.symlink_to(root, target_is_directory=True)
    before = {p.name: p.stat().st_size for p in Path(root).rglob("*.jpg")}
    with pytest.raises(DataError, match="overwrite the originals"):  # a symlink to the root is the root
        preresize(csv, "image_path", link, root=root, size=96, workers=0)
    assert {p.name: p.stat().st_size for p in Path(root).rglob("*.jpg")} == before


def test_undecodable_image_leaves_no_partial_file(tmp_path):
    csv, root, rel = _subset_csv(tmp_path, "ph2", 4)
    data = (root / rel[2]).read_bytes()
    (root / rel[2]).write_bytes(data[: len(data) // 3])  # the header still reads: fails only when decoded
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        preresize(csv, "image_path", out, root=root, size=96, workers=2)
    msg = str(err.value)
    assert "1 image(s) could not be pre-resized" in msg and f"row 4: corrupt image {root / rel[2]}" in msg
    assert not (out / rel[2]).exists()
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(Path(r).name for i, r in enumerate(rel) if i != 2)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    csv, root, rel = _subset_csv(tmp_path, "pad", 3)
    out = tmp_path / "out"
    real_save = Image.Image.save

    def failing_save(self, fp, *a, **kw):
        if str(fp).endswith(".tmp") and Path(rel[1]).name in str(fp):
            Path(fp).write_bytes(b"\xff\xd8 half a jpeg")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(DataError, match="No space left on device"):
        preresize(csv, "image_path", out, root=root, size=96, workers=0)
    assert not (out / rel[1]).exists()
    assert (out / rel[0]).is_file() and (out / rel[2]).is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _door(argv, capsys):
    from panderm.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err, (err.strip().splitlines() or [""])[-1]


def test_decompression_bomb_is_one_line_with_its_row_and_pixel_count(tmp_path, capsys):
    from test_bad_input_doors import bomb_png

    csv, root, rel = _subset_csv(tmp_path, "ham", 3)
    bomb_png(root / "images" / "bomb.png")  # a 30000 x 30000 PNG header (PIL: DecompressionBombError)
    frame = pd.read_csv(csv)
    frame.loc[1, "image_path"] = "images/bomb.png"
    frame.to_csv(csv, index=False)
    out = tmp_path / "out"
    rc, err, last = _door(["preresize", "--csv", csv, "--root", root, "--out", out, "--size", 96, "--workers", 0],
                          capsys)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert last.startswith("panderm: error:"), last
    assert f"row 3: {root / 'images' / 'bomb.png'} [too large (900000000 pixels, over the limit of 178956970" in last
    assert last.endswith("(set it with --max-image-pixels)")
    assert not out.exists()


def test_max_image_pixels_moves_the_limit_in_every_worker(tmp_path, capsys):
    csv, root, rel = _subset_csv(tmp_path, "ham", 3)
    with Image.open(root / rel[0]) as img:
        w, h = img.size
    out = tmp_path / "out"
    argv = ["preresize", "--csv", csv, "--root", root, "--out", out, "--size", 96, "--workers", 2]
    rc, err, last = _door([*argv, "--max-image-pixels", w * h - 1], capsys)
    assert rc == 2 and f"row 2: {root / rel[0]} [too large ({w}x{h} = {w * h} pixels, over the limit of {w * h - 1} " \
                         in last, last
    rc, err, last = _door([*argv, "--max-image-pixels", w * h], capsys)
    assert rc == 0, err
    assert all((out / r).is_file() for r in rel)
    # the API takes the same limit; a second run sees the copies up to date
    assert preresize(csv, "image_path", out, root=root, size=96, workers=0, max_image_pixels=w * h).skipped == 3
    with pytest.raises(DataError, match=r"row 2: .* \[too large"):
        preresize(csv, "image_path", tmp_path / "out2", root=root, size=96, workers=0, max_image_pixels=w * h - 1)


def test_a_tilde_is_a_folder_under_the_root(tmp_path, monkeypatch):
    """`~/x.jpg` is root/~/x.jpg here as in every door (never $HOME/x.jpg), copied to out/~/x.jpg."""
    csv, root, rel = _subset_csv(tmp_path, "ham", 2)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (root / "~").mkdir()
    (root / rel[1]).rename(root / "~" / "x.jpg")
    csv.write_text(f"image_path\n{rel[0]}\n~/x.jpg\n")
    out = tmp_path / "out"
    assert preresize(csv, "image_path", out, root=root, size=96, workers=0).n == 2
    assert (out / "~" / "x.jpg").is_file() and not (tmp_path / "home").exists()


def test_a_nul_byte_in_a_path_names_its_row(tmp_path):
    csv, root, rel = _subset_csv(tmp_path, "ham", 2)
    csv.write_bytes(f"image_path\n{rel[0]}\nimages/a\0b.jpg\n".encode())
    with pytest.raises(DataError, match=r"row\(s\) 3: image path 'images/a\\x00b.jpg' holds a NUL byte"):
        preresize(csv, "image_path", tmp_path / "out", root=root, size=96, workers=0)


def test_bad_settings_name_the_flag_on_the_command_line(tmp_path, capsys):
    """The library names the setting (`param`); `panderm preresize` names its flag."""
    from panderm.cli import main

    csv, root, _ = _subset_csv(tmp_path, "ham", 2)
    common = ["preresize", "--csv", str(csv), "--root", str(root), "--workers", "0"]
    for flag, value, text in (("--size", "0", "the size must be a positive number of pixels, got 0"),
                              ("--quality", "101", "the JPEG quality must be in 1..100, got 101")):
        assert main([*common, "--out", str(tmp_path / "o"), flag, value]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().splitlines()[-1] == f"panderm: error: {text} (set it with {flag})"
    assert main([*common, "--out", str(root)]) == 2
    assert capsys.readouterr().err.strip().endswith("would overwrite the originals (set it with --out)")
    assert not (tmp_path / "o").exists()
