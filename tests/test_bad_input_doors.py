"""Every door x every bad input, run in-process through the doors' own `main(argv)` (and so through `run_door`).

Each bad case must end with one stderr line that says "error" and names the file, row or column at fault, a
non-zero exit, no exception escaping (no traceback) and nothing left in the output folder. The image modes a
real dataset holds (RGBA / 16-bit / grayscale PNG, CMYK and EXIF-rotated JPEG) must work through one door of
every task family. docs/RELIABILITY.md lists the matrix.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HAM_IMAGES = REPO / "data" / "sample" / "ham10000_sample" / "images"
D = 32  # the tiny open_clip model's embedding width
N = 8  # rows of the good CSV
BAD_ROW = 2  # the frame row a bad cell goes into: CSV line 4 (header = line 1)


pytestmark = pytest.mark.usefixtures("two_torch_threads")


# --------------------------------------------------------------------------------------------------------
# Calling a door in-process
# --------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def door_main(rel: str):
    """`main(argv)` of a door: the `panderm` CLI, or a door script loaded from its file."""
    if rel == "panderm":
        from panderm.cli import main

        return main
    spec = importlib.util.spec_from_file_location("door_" + re.sub(r"\W", "_", rel), REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def call(rel: str, argv, capsys) -> tuple[int, str, str]:
    try:
        rc = door_main(rel)([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid PNG header declaring width x height pixels with almost no data: a decompression bomb in ~100 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def good_frame() -> pd.DataFrame:
    names = [f"images/img{i}.jpg" for i in range(N)]
    return pd.DataFrame({
        "image_path": names,
        "label": [0, 1] * (N // 2),
        "split": ["train"] * 4 + ["val"] * 2 + ["test"] * 2,
        "caption": [f"a dermoscopic image of lesion {i} melanoma" for i in range(N)],
        "clinical_path": names,
        "derm_path": names,
    })


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_openclip, tiny_panderm_v1):
    """Images, a good CSV, embeddings, an SAE and its codes: everything the doors read."""
    base = tmp_path_factory.mktemp("doors")
    data = base / "data"
    (data / "images").mkdir(parents=True)
    sources = sorted(HAM_IMAGES.glob("*.jpg"))
    for i in range(N):
        with Image.open(sources[i]) as im:  # small copies keep decoding cheap
            im.convert("RGB").resize((48, 40)).save(data / "images" / f"img{i}.jpg", quality=90)
    (data / "images" / "empty.jpg").write_bytes(b"")
    full = (data / "images" / "img0.jpg").read_bytes()
    (data / "images" / "trunc.jpg").write_bytes(full[: len(full) // 2])
    (data / "images" / "folder.jpg").mkdir()
    shutil.copy(data / "images" / "img1.jpg", base / "outside.jpg")  # a real image outside the root
    bomb_png(data / "images" / "bomb.png")
    good_frame().to_csv(data / "good.csv", index=False)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(N, D)).astype(np.float32)
    np.save(base / "emb.npy", emb)
    np.save(base / "sae_train.npy", rng.normal(size=(64, D)).astype(np.float32))
    sae = base / "sae"
    from panderm.tasks.concepts.run import extract_activations, train_sae_from_file

    train_sae_from_file(base / "sae_train.npy", sae, dict(expansion=2, epochs=2, batch_size=32, seed=0),
                        progress=False)
    extract_activations(sae / "autoencoder.pth", base / "emb.npy", base / "codes.npy", 64)
    np.save(base / "weights.npy", rng.normal(size=(2 * D,)).astype(np.float32))
    return {"base": base, "data": data, "model": f"local-dir:{tiny_openclip}", "v1": str(tiny_panderm_v1),
            "clip_weights": str(tiny_openclip / "open_clip_model.safetensors")}


@dataclass
class Ctx:
    """What one door invocation points at: `csv`, `emb` and `ckpt` may be bad; `out` must stay empty."""

    w: dict
    csv: str
    emb: str
    out: Path
    ckpt: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.w["data"]

    @property
    def model(self) -> str:
        return self.w["model"]

    @property
    def sae(self) -> str:
        return self.ckpt or str(self.w["base"] / "sae")

    @property
    def codes(self) -> str:
        return self.emb if self.extra.get("bad_emb") else str(self.w["base"] / "codes.npy")


FAST = ["--device", "cpu", "--batch-size", "4", "--workers", "0", "--no-cache"]


def _mm(c: Ctx, ref: bool) -> list:
    small = ["--num_head" if ref else "--num-head", 2, "--att_depth" if ref else "--att-depth", 1,
             "--bootstrap", 0, "--seed", 0]
    if ref:
        return ["--model_name", c.model, "--dataset", "csv", "--data_dir", c.csv, "--class_num", 2, "--cuda", "false",
                "--use_cli", "--batch_size", 4, *small, *(["--checkpoint", c.ckpt] if c.ckpt else [])]
    return ["--model", c.model, "--dataset", "csv", "--data-path", c.csv, "--class-num", 2, "--device", "cpu",
            "--use-cli", "--batch-size", 4, "--workers", 0, *small, *(["--checkpoint", c.ckpt] if c.ckpt else [])]


# door name -> (main file, argv builder, "families" of input it reads)
#   csv: a CSV; img: image paths from it; lbl: a label column; k: a class count; emb: an embeddings/codes .npy;
#   ckpt: a weights file; sep: comma-only CSV reader.
DOORS = {
    "panderm features": ("panderm", lambda c: ["features", "--model", c.model, "--csv", c.csv, *FAST,
                                               *(["--checkpoint", c.ckpt] if c.ckpt else []),
                                               "--out", c.out / "f.npy"], {"csv", "img", "ckpt"}),
    "panderm zeroshot": ("panderm", lambda c: ["zeroshot", "--model", c.model, "--csv", c.csv, "--classnames", "a,b",
                                               "--bootstrap", 0, *FAST, *(["--checkpoint", c.ckpt] if c.ckpt else []),
                                               "--out", c.out / "zs"], {"csv", "img", "lbl", "k", "ckpt"}),
    "panderm retrieval": ("panderm", lambda c: ["retrieval", "--model", c.model, "--csv", c.csv, "--bootstrap", 0,
                                                *FAST, *(["--checkpoint", c.ckpt] if c.ckpt else []),
                                                "--out", c.out / "ret"], {"csv", "img", "ckpt"}),
    "panderm linear-probe": ("panderm", lambda c: ["linear-probe", "--model", c.model, "--csv", c.csv,
                                                   "--bootstrap", 0, *FAST,
                                                   *(["--checkpoint", c.ckpt] if c.ckpt else []),
                                                   "--out", c.out / "lp"], {"csv", "img", "lbl", "ckpt"}),
    "panderm finetune": ("panderm", lambda c: ["finetune", "--model", "panderm-v1-base",
                                               "--checkpoint", c.ckpt or c.w["v1"], "--csv", c.csv, "--device", "cpu",
                                               "--epochs", 1, "--warmup-epochs", 0, "--batch-size", 2, "--workers",
                                               0, "--bootstrap", 0, "--mixup", 0, "--cutmix", 0,
                                               "--out", c.out / "ft"], {"csv", "img", "lbl", "ckpt"}),
    "panderm multimodal train": ("panderm", lambda c: ["multimodal", "train", *_mm(c, False), "--epochs", 1,
                                                       "--output-dir", c.out / "mm"], {"csv", "img", "lbl", "k", "ckpt"}),
    "panderm concepts train-sae": ("panderm", lambda c: ["concepts", "train-sae", "--embeddings", c.emb, "--epochs", 1,
                                                         "--device", "cpu", "--out", c.out / "sae"], {"emb"}),
    "panderm concepts activations": ("panderm", lambda c: ["concepts", "activations", "--sae", c.sae, "--embeddings",
                                                           c.emb, "--device", "cpu", "--out", c.out / "act"],
                                     {"emb", "sae"}),
    "panderm concepts cbm": ("panderm", lambda c: ["concepts", "cbm", "--csv", c.csv, "--embeddings", c.emb,
                                                   "--n-splits", 2, "--out", c.out / "cbm"], {"csv", "lbl", "emb", "rows"}),
    "panderm concepts retrieve": ("panderm", lambda c: ["concepts", "retrieve", "--model", c.model, "--device", "cpu",
                                                        "--sae", c.sae, "--codes", c.codes, "--csv", c.csv, "--text",
                                                        "melanoma", "--out", c.out / "ret"],
                                  {"csv", "img", "emb", "rows", "sae"}),
    "panderm concepts report": ("panderm", lambda c: ["concepts", "report", "--model", c.model, "--device", "cpu",
                                                      "--sae", c.sae, "--codes", c.codes, "--csv", c.csv,
                                                      "--out", c.out / "rep"], {"csv", "img", "emb", "rows", "sae"}),
    "src/main.py": ("src/main.py", lambda c: ["--zeroshot_eval_custom", c.csv, "--classnames", "a,b", "--csv-img-key",
                                              "image_path", "--csv-label-key", "label", "--parent-path",
                                              f"{c.data}/", "--model", c.model, "--device", "cpu", "--workers", 0,
                                              "--bootstrap", 0, "--no-cache",
                                              *(["--pretrained", c.ckpt] if c.ckpt else []),
                                              "--logs", c.out / "logs"], {"csv", "img", "lbl", "k", "ckpt"}),
    # The reference's retrieval reader opens paths relative to the working directory (no --parent-path):
    # the test runs this door from the data folder.
    "src/main.py --val-data": ("src/main.py", lambda c: ["--val-data", c.csv, "--csv-img-key", "image_path",
                                                         "--csv-caption-key", "caption",
                                                         "--model", c.model, "--device", "cpu", "--workers", 0,
                                                         "--bootstrap", 0, "--no-cache",
                                                         *(["--pretrained", c.ckpt] if c.ckpt else []),
                                                         "--logs", c.out / "logs"], {"csv", "img", "ckpt"}),
    "src/export_visual_features.py": ("src/export_visual_features.py", lambda c: [
        "--model_name", c.model, "--csv_path", c.csv, "--img_col", "image_path", "--data_root", c.data,
        "--device", "cpu", "--num_workers", 0, "--batch_size", 4, *(["--checkpoint", c.ckpt] if c.ckpt else []),
        "--output_dir", c.out / "exp"], {"csv", "img", "ckpt"}),
    "linear_probe/linear_eval.py": ("linear_probe/linear_eval.py", lambda c: [
        "--csv_path", c.csv, "--image_key", "image_path", "--root_path", c.data, "--model", c.model,
        "--model_preprocess", "--device", "cpu", "--num_workers", 0, "--batch_size", 4,
        *(["--checkpoint", c.ckpt] if c.ckpt else []), "--output_dir", c.out / "lpe"], {"csv", "img", "lbl", "ckpt"}),
    "multimodal_finetune/train.py": ("multimodal_finetune/train.py", lambda c: [*_mm(c, True), "--epochs", 1,
                                                                                "--output_dir", c.out / "mm"],
                                     {"csv", "img", "lbl", "k", "ckpt"}),
    # --model_path: the trained fusion model (here the checkpoint case's wrong file; the CSV cases fail first)
    "multimodal_finetune/test.py": ("multimodal_finetune/test.py", lambda c: [
        *_mm(replace(c, ckpt=None), True), "--model_path", c.ckpt or c.w["base"] / "no-such-best.pt",
        "--output_dir", c.out / "mm"], {"csv", "img", "lbl", "k", "ckpt"}),
    "0_extract_sae_activations.py": ("automated-concept-discovery/0_extract_sae_activations.py", lambda c: [
        "--checkpoint", c.sae, "--embeddings", c.emb, "--output", c.out / "codes.npy"], {"emb", "sae"}),
    "1_train_clf_binary-class.py": ("automated-concept-discovery/1_train_clf_binary-class.py", lambda c: [
        "--csv", c.csv, "--embeddings", c.emb, "--label_col", "label", "--n_splits", 2, "--output", c.out / "cbm"],
        {"csv", "lbl", "emb", "rows"}),
    "2_global_concept_viz_binary-class.py": ("automated-concept-discovery/2_global_concept_viz_binary-class.py",
                                             lambda c: ["--csv", c.csv, "--embeddings", c.emb, "--label_col", "label",
                                                        "--out_dir", c.out / "viz"], {"csv", "lbl", "emb", "rows"}),
    "3_train_biased-cbm_binary-class.py": ("automated-concept-discovery/3_train_biased-cbm_binary-class.py", lambda c: [
        "--train_csv", c.csv, "--test_csv", c.w["data"] / "good.csv", "--train_embeddings", c.emb,
        "--test_embeddings", c.w["base"] / "codes.npy", "--label_col", "label", "--output", c.out / "bcbm"],
        {"csv", "lbl", "emb", "rows"}),
    "4_intervention_CBM.py": ("automated-concept-discovery/4_intervention_CBM.py", lambda c: [
        "--sae_checkpoint", c.sae, "--method", "topk", "--weights", c.w["base"] / "weights.npy", "--activations",
        c.emb if c.extra.get("bad_emb") else c.w["base"] / "codes.npy", "--output", c.out / "after.npy"],
        {"emb", "sae"}),
    "train_sae.py": ("automated-concept-discovery/train_sae.py", lambda c: [
        "--save_dir", c.out / "sae", "--embeddings", c.emb, "--epochs", 1, "--batch_size", 8, "--quiet"], {"emb"}),
}


def _put(frame: pd.DataFrame, col: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[col] = frame[col].astype(object)
    frame.loc[BAD_ROW, col] = value
    if col == "image_path":  # the multimodal doors read the same path from their two image columns
        frame.loc[BAD_ROW, "clinical_path"] = value
        frame.loc[BAD_ROW, "derm_path"] = value
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _outside(w) -> str:
    return str(w["base"] / "outside.jpg")


# case -> (needs (all of these door families), CSV content builder or None (missing) or "good",
#          .npy builder or None (missing) or "good", checkpoint, what the last line must contain)
# `needles` is a tuple of alternatives, each a tuple of fragments that must all appear.
@dataclass
class Case:
    needs: set
    csv: object = "good"
    emb: object = "good"
    ckpt: object = None
    needles: tuple = ()
    skip: frozenset = frozenset()


ROW = "4"  # CSV line of BAD_ROW
CASES = {
    # -- the CSV itself
    "missing CSV": Case({"csv"}, csv=None, needles=(("not found", "bad.csv"),)),
    "empty CSV": Case({"csv"}, csv=lambda w: b"", needles=(("is empty", "bad.csv"),)),
    "header only": Case({"csv"}, csv=lambda w: b"image_path,label,split,caption,clinical_path,derm_path\n",
                        needles=(("no rows", "bad.csv"),)),
    "non-UTF-8 CSV": Case({"csv"}, csv=lambda w: _csv(good_frame()).replace(b"lesion 3", b"l\xe9sion 3"),
                          needles=(("bad.csv", "utf-8"),)),
    "semicolon-separated CSV": Case({"csv"}, csv=lambda w: good_frame().to_csv(index=False, sep=";").encode(),
                                    needles=(("bad.csv", "semicolon-separated"),)),
    "missing image column": Case({"csv", "img"}, csv=lambda w: _csv(good_frame().drop(
        columns=["image_path", "clinical_path", "derm_path"])), needles=(("bad.csv", "not found", "_path'"),)),
    "missing label column": Case({"csv", "lbl"}, csv=lambda w: _csv(good_frame().drop(columns=["label"])),
                                 needles=(("bad.csv", "'label'", "not found"),)),
    # -- cells
    "empty image cell": Case({"csv", "img"}, csv=lambda w: _csv(_put(good_frame(), "image_path", "")),
                             needles=(("bad.csv", "_path'", "empty", ROW),)),
    "empty label cell": Case({"csv", "lbl"}, csv=lambda w: _csv(_put(good_frame(), "label", "")),
                             needles=(("bad.csv", "'label'", "empty", ROW),)),
    # The concept-discovery doors take labels as categories (text allowed, as the reference): a stray value is
    # a third class, which their binary classifiers and the CBM's stratified splits reject naming the column;
    # the per-class importance door (2_global) accepts any number of classes, so these cases do not apply there.
    "text label": Case({"csv", "lbl"}, csv=lambda w: _csv(_put(good_frame(), "label", "cat")),
                       needles=(("bad.csv", "'label'", "text labels", ROW), ("bad.csv", "'label'", "cat", ROW),
                                ("bad.csv", "'label'", "3 classes"), ("bad.csv", "'label'", "split")),
                       skip=frozenset({"2_global_concept_viz_binary-class.py"})),
    "float label": Case({"csv", "lbl"}, csv=lambda w: _csv(_put(good_frame(), "label", 0.5)),
                        needles=(("bad.csv", "'label'", "non-integer", ROW), ("bad.csv", "'label'", "3 classes"),
                                 ("bad.csv", "'label'", "split")),
                        skip=frozenset({"2_global_concept_viz_binary-class.py"})),
    "negative label": Case({"csv", "lbl"}, csv=lambda w: _csv(_put(good_frame(), "label", -1)),
                           needles=(("bad.csv", "'label'", "negative", ROW), ("bad.csv", "'label'", "outside", ROW),
                                    ("bad.csv", "'label'", "3 classes"), ("bad.csv", "'label'", "split")),
                           skip=frozenset({"2_global_concept_viz_binary-class.py"})),
    "class count mismatch": Case({"csv", "lbl", "k"}, csv=lambda w: _csv(_put(good_frame(), "label", 2)),
                                 needles=(("bad.csv", "'label'", "outside 0..1", ROW),
                                          ("--class_num 2", "bad.csv", "3 classes"))),
    # -- images
    "missing image": Case({"csv", "img"}, csv=lambda w: _csv(_put(good_frame(), "image_path", "images/gone.jpg")),
                          needles=(("gone.jpg", "missing"),)),
    "zero-byte image": Case({"csv", "img"}, csv=lambda w: _csv(_put(good_frame(), "image_path", "images/empty.jpg")),
                            needles=(("empty.jpg", "empty file"),)),
    "image path is a folder": Case({"csv", "img"},
                                   csv=lambda w: _csv(_put(good_frame(), "image_path", "images/folder.jpg")),
                                   needles=(("folder.jpg", "a directory"),)),
    # (test.py decodes images only after loading a trained checkpoint; its CSV checks are the train door's)
    "truncated JPEG": Case({"csv", "img"}, csv=lambda w: _csv(_put(good_frame(), "image_path", "images/trunc.jpg")),
                           needles=(("trunc.jpg",),), skip=frozenset({"multimodal_finetune/test.py"})),
    # A NUL byte cannot be in a file name (os.stat raised "ValueError: embedded null byte").
    "NUL byte in image path": Case({"csv", "img"},
                                   csv=lambda w: _csv(_put(good_frame(), "image_path", "images/img\x002.jpg")),
                                   needles=(("bad.csv", "_path'", ROW, "NUL byte", "'images/img\\x002.jpg'"),)),
    # A 30000 x 30000 PNG header (PIL raised DecompressionBombError): refused naming the pixel count and, where
    # the image is checked against its CSV, the row; the multimodal doors name the case row after the list.
    "decompression bomb": Case({"csv", "img"}, csv=lambda w: _csv(_put(good_frame(), "image_path", "images/bomb.png")),
                               needles=(("bad.csv", f"row {ROW}: ", "bomb.png", "900000000 pixels", "over the limit of "
                                         "178956970", "PANDERM_MAX_IMAGE_PIXELS=N"),
                                        ("bomb.png", "900000000 pixels", "PANDERM_MAX_IMAGE_PIXELS=N",
                                         f"case row {ROW} "))),
    # -- embeddings / codes
    "missing .npy": Case({"emb"}, emb=None, needles=(("bad.npy", "not found"),)),
    "wrong row count": Case({"emb", "rows"}, emb=lambda: np.zeros((N - 3, 2 * D), np.float32),
                            needles=(("bad.npy", "5 rows", "bad.csv"), ("bad.npy", "5 rows"))),
    "int .npy": Case({"emb"}, emb=lambda: np.ones((N, 2 * D), np.int64), needles=(("bad.npy", "int64", "floating"),)),
    "string .npy": Case({"emb"}, emb=lambda: np.full((N, 2 * D), "x"), needles=(("bad.npy", "<U1", "floating"),)),
    "pickled .npy": Case({"emb"}, emb=lambda: np.array([{"a": 1}] * N, dtype=object),
                         needles=(("bad.npy", "pickled"),)),
    # -- weights
    "checkpoint of another architecture": Case({"ckpt"}, ckpt="other", needles=((),)),
    "SAE checkpoint of another architecture": Case({"sae"}, ckpt="other", needles=((),)),
}


def matrix():
    for door, (_, _, reads) in DOORS.items():
        for case, spec in CASES.items():
            if spec.needs <= reads and door not in spec.skip:
                yield pytest.param(door, case, id=f"{door}|{case}")


def _emb_width(door: str) -> int:
    return D if door in ("panderm concepts train-sae", "train_sae.py", "0_extract_sae_activations.py",
                         "panderm concepts activations") else 2 * D


@pytest.mark.parametrize("door,case", list(matrix()))
def test_door_rejects_bad_input(world, door, case, tmp_path, capsys, monkeypatch):
    rel, build, reads = DOORS[door]
    spec = CASES[case]
    if door == "src/main.py --val-data":
        monkeypatch.chdir(world["data"])
    csv = tmp_path / "bad.csv"
    if spec.csv == "good":
        shutil.copy(world["data"] / "good.csv", world["data"] / "bad.csv")
        csv = world["data"] / "bad.csv"
    elif spec.csv is not None:
        (world["data"] / "bad.csv").write_bytes(spec.csv(world))
        csv = world["data"] / "bad.csv"
    else:
        (world["data"] / "bad.csv").unlink(missing_ok=True)
        csv = world["data"] / "bad.csv"
    emb = tmp_path / "bad.npy"
    if spec.emb == "good":
        width = _emb_width(door)
        src = world["base"] / ("codes.npy" if width == 2 * D else "emb.npy")
        shutil.copy(src, emb)
    elif spec.emb is not None:
        arr = spec.emb()
        if arr.ndim == 2 and _emb_width(door) == D:
            arr = arr[:, :D]
        np.save(emb, arr, allow_pickle=arr.dtype == object)
    ckpt = None
    if spec.ckpt == "other":
        # a PanDerm v1 .pth where an open_clip model / SAE is expected, an open_clip file where PanDerm v1 is
        ckpt = world["clip_weights"] if door == "panderm finetune" else world["v1"]
    out = tmp_path / "out"
    out.mkdir()
    ctx = Ctx(world, str(csv), str(emb), out, ckpt, {"bad_emb": spec.emb != "good"})
    rc, stdout, err = call(rel, build(ctx), capsys)
    line = last_line(err)
    assert rc not in (0, None), f"{door}: exit 0 on {case}\n{stdout}\n{err}"
    assert "Traceback" not in err, err
    assert "error" in line.lower(), f"{door} on {case}: {line!r}"
    if spec.ckpt == "other" and door == "panderm finetune":
        assert Path(ckpt).name in line and "not a CAE/BEiT ViT state dict" in line and "missing" in line, line
    elif spec.ckpt == "other":
        assert Path(ckpt).name in line and ("key" in line or "SAE checkpoint" in line), line
    else:
        assert any(all(frag in line for frag in alt) for alt in spec.needles), f"{door} on {case}: {line!r}"
    assert sorted(p.name for p in out.iterdir()) == [], f"{door} left output behind on {case}"


# --------------------------------------------------------------------------------------------------------
# Duplicate rows: kept, with one warning line naming the CSV and the rows
# --------------------------------------------------------------------------------------------------------

DUP_LINE = str(N + 2)  # the appended copy of row 0 is CSV line N + 2


@pytest.mark.parametrize("door", ["panderm features", "panderm zeroshot", "src/export_visual_features.py",
                                  "panderm concepts cbm"])
def test_duplicate_rows_are_kept_with_a_warning(world, door, tmp_path, capsys, caplog):
    frame = good_frame()
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    csv = world["data"] / "dup.csv"
    frame.to_csv(csv, index=False)
    emb = tmp_path / "emb.npy"
    np.save(emb, np.random.default_rng(1).normal(size=(N + 1, 2 * D)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    rel, build, _ = DOORS[door]
    with caplog.at_level(logging.WARNING, logger="panderm"):
        rc, stdout, err = call(rel, build(Ctx(world, str(csv), str(emb), out)), capsys)
    assert rc == 0, err
    if door == "panderm concepts cbm":  # labels only, no image paths: nothing is a duplicate to it
        return
    warnings = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "dup.csv" in warnings[0] and f"row(s) {DUP_LINE} " in warnings[0] and "kept" in warnings[0]
    if door == "panderm features":
        assert np.load(out / "f.npy").shape[0] == N + 1  # kept: one output row per CSV row
        feats = np.load(out / "f.npy")  # (batch composition moves the last float bits)
        np.testing.assert_allclose(feats[0], feats[N], rtol=1e-5, atol=1e-6)
        assert not np.allclose(feats[0], feats[1], atol=1e-3)


def test_duplicate_warning_library(world, caplog):
    from panderm.data.tables import load_table

    frame = good_frame()
    frame = pd.concat([frame, frame.iloc[[1, 1]]], ignore_index=True)
    csv = world["data"] / "dup2.csv"
    frame.to_csv(csv, index=False)
    with caplog.at_level(logging.WARNING, logger="panderm"):
        t = load_table(csv, "image_path", label_col="label")
    assert len(t) == N + 2
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [f"warning: {csv}: row(s) {N + 2}, {N + 3} repeat an earlier row's 'image_path' and 'label' "
                    "(2 duplicate(s), kept)"]
    caplog.clear()
    # Same image, another label: not an exact duplicate, no warning.
    frame.loc[N, "label"] = 0
    frame.iloc[: N + 1].to_csv(csv, index=False)
    with caplog.at_level(logging.WARNING, logger="panderm"):
        load_table(csv, "image_path", label_col="label")
    assert not caplog.records


# --------------------------------------------------------------------------------------------------------
# Paths as the reference takes them: absolute and `../` accepted by every door; `~` is never expanded
# --------------------------------------------------------------------------------------------------------

IMAGE_DOORS = [door for door, (_, _, reads) in DOORS.items() if "img" in reads]


@pytest.mark.parametrize("value", ["absolute", "../outside.jpg"])
@pytest.mark.parametrize("door", IMAGE_DOORS)
def test_every_door_accepts_absolute_and_parent_paths(world, door, value, tmp_path, capsys, monkeypatch):
    """Research CSVs hold absolute and `../` paths; the reference opens them as written, so every door does."""
    rel, build, _ = DOORS[door]
    if door == "src/main.py --val-data":
        monkeypatch.chdir(world["data"])
    path = _outside(world) if value == "absolute" else value
    csv = world["data"] / "outside.csv"
    _put(good_frame(), "image_path", path).to_csv(csv, index=False)
    out = tmp_path / "out"
    out.mkdir()
    rc, stdout, err = call(rel, build(Ctx(world, str(csv), str(world["base"] / "codes.npy"), out)), capsys)
    line = last_line(err)
    if door == "src/main.py" and value == "absolute":
        # --parent-path DATA/ + '/abs/outside.jpg' is the string 'DATA//abs/outside.jpg', as in the reference
        assert rc == 2 and f"{world['data']}{world['base']}/outside.jpg [missing]" in line, line
    elif door == "multimodal_finetune/test.py":  # the CSV is accepted; it then needs a trained model
        assert rc == 2 and "no-such-best.pt" in line and "outside" not in line, line
    else:
        assert rc == 0, f"{door}: {err}"
    if door == "panderm features":  # outside.jpg is a copy of img1.jpg: the same features
        feats = np.load(out / "f.npy")
        np.testing.assert_array_equal(feats[BAD_ROW], feats[1])


def test_allow_absolute_paths_is_an_accepted_no_op(world, tmp_path, capsys):
    csv = world["data"] / "outside.csv"
    _put(good_frame(), "image_path", _outside(world)).to_csv(csv, index=False)
    results = []
    for extra in ([], ["--allow-absolute-paths"]):
        out = tmp_path / f"out{len(extra)}"
        out.mkdir()
        rc, _, err = call("panderm", [*DOORS["panderm features"][1](Ctx(world, str(csv), "", out)), *extra], capsys)
        assert rc == 0, err
        results.append(np.load(out / "f.npy"))
    np.testing.assert_array_equal(results[0], results[1])
    for rel, flag in (("src/export_visual_features.py", "--allow_absolute_paths"),
                      ("src/main.py", "--allow-absolute-paths")):
        with pytest.raises(SystemExit) as exc:
            door_main(rel)(["--help"])
        assert exc.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert flag in help_text and "no effect" in help_text, help_text


# Each door, run from a working directory holding a `~` folder, with HOME elsewhere: a CSV value `~/x.jpg` is
# the file `./~/x.jpg` (what os.path.join and PIL open; the reference expands nothing), checked and opened as
# such; `$HOME/x.jpg` is never read. On the last landing these doors checked one file and opened the other.
TILDE_DOORS = {
    "panderm features": ("panderm", lambda c: ["features", "--model", c.model, "--csv", "t.csv", *FAST,
                                               "--out", c.out / "f.npy"]),
    "src/export_visual_features.py --data_root .": ("src/export_visual_features.py", lambda c: [
        "--model_name", c.model, "--csv_path", "t.csv", "--img_col", "image_path", "--data_root", ".",
        "--device", "cpu", "--num_workers", 0, "--batch_size", 4, "--output_dir", c.out / "exp"]),
    "linear_probe/linear_eval.py (default root)": ("linear_probe/linear_eval.py", lambda c: [
        "--csv_path", "t.csv", "--image_key", "image_path", "--model", c.model, "--model_preprocess",
        "--device", "cpu", "--num_workers", 0, "--batch_size", 4, "--output_dir", c.out / "lpe"]),
    "src/main.py": ("src/main.py", lambda c: [
        "--zeroshot_eval_custom", "t.csv", "--classnames", "a,b", "--csv-img-key", "image_path", "--csv-label-key",
        "label", "--model", c.model, "--device", "cpu", "--workers", 0, "--bootstrap", 0, "--no-cache",
        "--logs", c.out / "logs"]),
}


@pytest.mark.parametrize("where", ["home only", "working directory only"])
@pytest.mark.parametrize("door", list(TILDE_DOORS))
def test_a_tilde_path_is_checked_and_opened_as_the_same_file(world, door, where, tmp_path, capsys, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    (cwd / "images").symlink_to(world["data"] / "images")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    if where == "home only":
        shutil.copy(world["data"] / "images" / "img1.jpg", home / "x.jpg")
    else:
        (cwd / "~").mkdir()
        shutil.copy(world["data"] / "images" / "img1.jpg", cwd / "~" / "x.jpg")
    _put(good_frame(), "image_path", "~/x.jpg").to_csv(cwd / "t.csv", index=False)
    out = tmp_path / "out"
    out.mkdir()
    rel, build = TILDE_DOORS[door]
    rc, _, err = call(rel, build(Ctx(world, "t.csv", "", out)), capsys)
    line = last_line(err)
    if where == "home only":
        assert rc == 2 and f"row {ROW}: {cwd}/~/x.jpg [missing]" in line, line
        assert sorted(p.name for p in out.iterdir()) == []
        return
    assert rc == 0, err
    if door == "panderm features":  # the row holds the features of ./~/x.jpg, a copy of img1.jpg
        feats = np.load(out / "f.npy")
        np.testing.assert_array_equal(feats[BAD_ROW], feats[1])


# --------------------------------------------------------------------------------------------------------
# Decompression bombs: refused with the row and the pixel count; --max-image-pixels moves the limit
# --------------------------------------------------------------------------------------------------------

PIXELS = 48 * 40  # the world's images


@pytest.mark.parametrize("door,flag", [("panderm features", "--max-image-pixels"),
                                       ("src/export_visual_features.py", "--max_image_pixels")])
def test_max_image_pixels_moves_the_limit(world, door, flag, tmp_path, capsys):
    from PIL import Image

    from panderm.data.images import PIXEL_LIMIT_ENV

    rel, build, _ = DOORS[door]
    out = tmp_path / "out"
    out.mkdir()
    argv = build(Ctx(world, str(world["data"] / "good.csv"), "", out))
    rc, _, err = call(rel, [*argv, flag, PIXELS - 1], capsys)  # every image is one pixel too large
    line = last_line(err)
    assert rc == 2 and "8 of 8 image(s)" in line and "(too large)" in line, line
    assert f"row 2: {world['data'] / 'images' / 'img0.jpg'} [too large (48x40 = {PIXELS} pixels, over the limit of " \
           f"{PIXELS - 1}" in line and line.endswith(f"(set it with {flag})"), line
    assert sorted(p.name for p in out.iterdir()) == []
    rc, _, err = call(rel, [*argv, flag, PIXELS], capsys)
    assert rc == 0, err
    # the limit is the run's own: PIL's and the environment are as they were
    assert Image.MAX_IMAGE_PIXELS == 89478485 and PIXEL_LIMIT_ENV not in __import__("os").environ
    rc, _, err = call(rel, [*argv, flag, "-5"], capsys)
    assert rc == 2 and flag in err and "0: no limit" in err


def test_pils_own_limit_is_reported_and_raised_by_the_flag(world, tmp_path, capsys, monkeypatch):
    """Without the flag PIL's limit (2 x Image.MAX_IMAGE_PIXELS) holds; the flag replaces it, upwards too."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # PIL refuses more than 1000 pixels
    out = tmp_path / "out"
    out.mkdir()
    argv = DOORS["panderm features"][1](Ctx(world, str(world["data"] / "good.csv"), "", out))
    rc, _, err = call("panderm", argv, capsys)
    line = last_line(err)
    assert rc == 2 and f"row 9: {world['data'] / 'images' / 'img7.jpg'} [too large ({PIXELS} pixels, over the " \
                         "limit of 1000 " in line, line
    rc, _, err = call("panderm", [*argv, "--max-image-pixels", PIXELS], capsys)
    assert rc == 0, err
    rc, _, err = call("panderm", [*argv, "--max-image-pixels", 0], capsys)  # 0: no limit
    assert rc == 0, err
    assert Image.MAX_IMAGE_PIXELS == 500


def test_the_limit_reaches_worker_processes_through_the_environment(world, tmp_path, monkeypatch):
    """DataLoader / preresize workers of any start method read PANDERM_MAX_IMAGE_PIXELS."""
    import subprocess
    import sys

    code = ("from panderm.data.images import open_image\n"
            "from panderm.errors import DataError\n"
            "import sys\n"
            "try:\n    open_image(sys.argv[1])\nexcept DataError as e:\n    print(e)\nelse:\n    print('opened')\n")
    img = world["data"] / "images" / "img0.jpg"
    env = {**__import__("os").environ, "PANDERM_MAX_IMAGE_PIXELS": str(PIXELS - 1)}
    out = subprocess.run([sys.executable, "-c", code, str(img)], env=env, capture_output=True, text=True, timeout=600)
    assert out.stdout.strip() == (f"image {img} is too large (48x40 = {PIXELS} pixels, over the limit of {PIXELS - 1} "
                                  "that guards against decompression bombs; raise the limit with "
                                  "PANDERM_MAX_IMAGE_PIXELS=N)"), out.stderr
    env["PANDERM_MAX_IMAGE_PIXELS"] = str(PIXELS)
    out = subprocess.run([sys.executable, "-c", code, str(img)], env=env, capture_output=True, text=True, timeout=600)
    assert out.stdout.strip() == "opened", out.stderr


def test_symlinked_image_folder_inside_the_root_is_allowed(world, tmp_path):
    from panderm.data.tables import load_table

    root = tmp_path / "root"
    root.mkdir()
    (root / "images").symlink_to(world["data"] / "images")  # the link leaves the root; the CSV path does not
    good_frame().to_csv(root / "s.csv", index=False)
    t = load_table(root / "s.csv", "image_path")
    assert t.paths[0] == root / "images" / "img0.jpg" and t.paths[0].is_file()


# --------------------------------------------------------------------------------------------------------
# Image modes that must work: one door of every task family
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modes(world, tmp_path_factory):
    """RGBA / 16-bit / grayscale PNG, CMYK JPEG, EXIF-rotated PNG, each (but CMYK) with a plain-RGB twin."""
    d = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(40, 48), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, size=(40, 48), dtype=np.uint8)])).save(d / "rgba.png")
    Image.fromarray(rgb).save(d / "rgba_twin.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "deep16.png")
    Image.fromarray(np.dstack([gray] * 3)).save(d / "deep16_twin.png")
    Image.fromarray(gray).save(d / "gray.png")
    Image.fromarray(np.dstack([gray] * 3)).save(d / "gray_twin.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    img.save(d / "exif.png", exif=exif)
    Image.fromarray(np.rot90(rgb, k=-1).copy()).save(d / "exif_twin.png")
    assert Image.open(d / "deep16.png").mode.startswith("I") and Image.open(d / "cmyk.jpg").mode == "CMYK"
    shutil.copy(world["data"] / "images" / "img0.jpg", d / "plain.jpg")
    names = ["rgba.png", "deep16.png", "gray.png", "cmyk.jpg", "exif.png", "rgba_twin.png", "deep16_twin.png",
             "gray_twin.png", "exif_twin.png", "plain.jpg"]
    frame = pd.DataFrame({"image_path": names, "label": [i % 2 for i in range(10)],
                          "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2,
                          "caption": [f"lesion {i} melanoma" for i in range(10)],
                          "clinical_path": names, "derm_path": names})
    frame.to_csv(d / "modes.csv", index=False)
    np.save(d / "codes.npy", np.abs(rng.normal(size=(10, 2 * D))).astype(np.float32))
    return d


FAMILIES = ["panderm features", "panderm zeroshot", "panderm retrieval", "panderm linear-probe", "panderm finetune",
            "panderm multimodal train", "panderm concepts retrieve"]


@pytest.mark.parametrize("door", FAMILIES)
def test_image_modes_work_in_every_family(world, modes, door, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    ctx = Ctx(world, str(modes / "modes.csv"), "", out, extra={"bad_emb": True})
    ctx.emb = str(modes / "codes.npy")
    rc, stdout, err = call(DOORS[door][0], DOORS[door][1](ctx), capsys)
    assert rc == 0, err
    if door == "panderm features":
        feats = np.load(out / "f.npy")
        assert feats.shape == (10, D) and np.isfinite(feats).all()
        for mode, twin in ((0, 5), (1, 6), (2, 7), (4, 8)):  # decoded to the same RGB pixels as its twin
            np.testing.assert_allclose(feats[mode], feats[twin], rtol=1e-5, atol=1e-6)
        assert not np.allclose(feats[0], feats[1], atol=1e-3)  # different images do differ
        return
    results = next(out.rglob("results.json"))
    data = json.loads(results.read_text())
    if door in ("panderm zeroshot", "panderm finetune", "panderm multimodal train", "panderm linear-probe"):
        text = json.dumps(data)
        assert '"n_test": 2' in text or '"n": 10' in text or '"N": 10' in text, text[:400]
    assert data["provenance"]["csv_sha256"]


# --------------------------------------------------------------------------------------------------------
# resolve_paths: the path a CSV value names is the path that is opened
# --------------------------------------------------------------------------------------------------------


def test_a_leading_tilde_under_a_root_is_opened_and_checked_as_the_same_path(tmp_path, monkeypatch):
    from panderm.data.tables import resolve_paths

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"image_path": ["~/a.jpg"]})
    assert resolve_paths(frame, "image_path", tmp_path, "t.csv") == [tmp_path / "~" / "a.jpg"]
    # a relative root (".", a CSV's own folder given as a relative path), no root, the --parent-path prefix
    assert resolve_paths(frame, "image_path", ".", "t.csv") == [tmp_path / "~" / "a.jpg"]
    assert resolve_paths(frame, "image_path", Path("t.csv").parent, "t.csv") == [tmp_path / "~" / "a.jpg"]
    assert resolve_paths(frame, "image_path", None, "t.csv") == [tmp_path / "~" / "a.jpg"]
    assert resolve_paths(frame, "image_path", None, "t.csv", concat_prefix="") == [tmp_path / "~" / "a.jpg"]
    # a `~` typed on the command line (the root or the prefix) is expanded, as a shell would
    assert resolve_paths(frame, "image_path", "~/data", "t.csv") == [tmp_path / "home" / "data" / "~" / "a.jpg"]
    assert resolve_paths(frame, "image_path", None, "t.csv", concat_prefix="~/d/") == [tmp_path / "home/d/~/a.jpg"]


@pytest.mark.parametrize("value,prefix,expected", [
    ("images/a.jpg", None, "{root}/images/a.jpg"),
    ("images/../b.jpg", None, "{root}/images/../b.jpg"),
    ("../b.jpg", None, "{root}/../b.jpg"),  # taken as written, as the reference's os.path.join
    ("/etc/passwd", None, "/etc/passwd"),  # absolute: used as it is
    ("{root}/images/a.jpg", None, "{root}/images/a.jpg"),
    ("images/a.jpg", "", "{root}/images/a.jpg"),  # src/main.py's --parent-path '': the working directory
    ("../b.jpg", "", "{root}/../b.jpg"),
    ("/etc/passwd", "", "/etc/passwd"),
    ("a.jpg", "{root}/images/", "{root}/images/a.jpg"),
    ("../a.jpg", "{root}/images/", "{root}/images/../a.jpg"),
    ("/a.jpg", "{root}/images/", "{root}/images/a.jpg"),  # string concatenation: '{root}/images//a.jpg'
])
def test_resolve_paths_takes_paths_as_written(tmp_path, monkeypatch, value, prefix, expected):
    from panderm.data.tables import resolve_paths

    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"image_path": ["x.jpg", value.format(root=tmp_path)]})
    kw = {"concat_prefix": prefix.format(root=tmp_path)} if prefix is not None else {}
    root = None if prefix is not None else tmp_path
    paths = resolve_paths(frame, "image_path", root, "t.csv", **kw)
    assert paths[1] == Path(expected.format(root=tmp_path))
    # `allow_outside_root` is accepted and changes nothing
    assert resolve_paths(frame, "image_path", root, "t.csv", allow_outside_root=True, **kw) == paths
    assert resolve_paths(frame, "image_path", root, "t.csv", allow_outside_root=False, **kw) == paths


def test_a_nul_byte_names_its_rows(tmp_path):
    from panderm.data.tables import resolve_paths
    from panderm.errors import DataError

    frame = pd.DataFrame({"image_path": ["a.jpg", "b\x00.jpg", "c.jpg", "\x00"]})
    with pytest.raises(DataError) as err:
        resolve_paths(frame, "image_path", tmp_path, "t.csv")
    assert str(err.value) == ("t.csv: column 'image_path', row(s) 3, 5: image path 'b\\x00.jpg' holds a NUL byte "
                              "(\\x00), which no file name can contain")
