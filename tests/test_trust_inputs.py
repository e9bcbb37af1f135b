"""Other people's files and flags (issue 13): labels that would allocate terabytes or invent classes, NaN
flags, two runs on one folder, a full disk, the umask, side files in provenance, src/main.py's shared
per-sample CSV. Each case is one error line (or the right file) and nothing half-written."""
import errno
import fcntl
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from panderm.cli import main as panderm_main

from test_finetune import tiny_csv  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
PH2 = ROOT / "data" / "sample" / "ph2"


@pytest.fixture
def ph2_small(tmp_path):
    """12 PH2 rows (both classes in train and test), image paths absolute."""
    frame = pd.read_csv(PH2 / "ph2.csv")
    frame = pd.concat([frame[frame["label"] == c].head(6) for c in (0, 1)]).reset_index(drop=True)
    frame["split"] = ["train"] * 4 + ["test"] * 2 + ["train"] * 4 + ["test"] * 2
    frame["image_path"] = [str(PH2 / p) for p in frame["image_path"]]
    return frame


def _write(frame, path):
    frame.to_csv(path, index=False)
    return path


def _one_line(rc, capsys, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and all(n in last for n in needles), err
    return last


def _lp(csv, out, *extra):
    return ["linear-probe", "--model", "demo", "--csv", str(csv), "--device", "cpu", "--out", str(out),
            "--bootstrap", "0", *map(str, extra)]


@pytest.mark.parametrize("value", [1e9, 1e12])
def test_a_huge_label_is_refused_before_anything_is_allocated(ph2_small, tmp_path, capsys, value):
    frame = ph2_small.copy()
    frame["label"] = frame["label"].astype(float)
    frame.loc[3, "label"] = value
    csv = _write(frame, tmp_path / "huge.csv")
    last = _one_line(panderm_main(_lp(csv, tmp_path / "o")), capsys, "labels must be 0..K-1 without gaps",
                     f"up to {int(value)} (row 5)", "no row has label 2")
    assert not (tmp_path / "o").exists(), last


def test_finetune_and_linear_probe_share_one_label_rule(tiny_panderm_v1, tiny_csv, tmp_path, capsys):  # noqa: F811
    frame = pd.read_csv(tiny_csv)
    frame["label"] = frame["label"].map({0: 0, 1: 5, 2: 9, 3: 9})
    frame["image_path"] = [str(tiny_csv.parent / p) for p in frame["image_path"]]
    csv = _write(frame, tmp_path / "gaps.csv")
    needles = ("labels must be 0..K-1 without gaps", "3 distinct label(s) up to 9", "no row has label 1")
    _one_line(panderm_main(["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv",
                            str(csv), "--device", "cpu", "--out", str(tmp_path / "ft")]), capsys, *needles)
    _one_line(panderm_main(_lp(csv, tmp_path / "lp")), capsys, *needles)


def test_label_messages_say_what_is_wrong(ph2_small, tmp_path, capsys):
    frame = ph2_small.copy()
    frame["label"] = frame["label"].astype(object)
    frame.loc[2, "label"] = "inf"
    _one_line(panderm_main(_lp(_write(frame, tmp_path / "inf.csv"), tmp_path / "o")), capsys,
              "non-finite label(s) in row(s) 4", "inf")
    frame["label"] = 0
    _one_line(panderm_main(_lp(_write(frame, tmp_path / "one.csv"), tmp_path / "o")), capsys,
              "every row has label 0: a classifier needs at least two classes")


def test_an_empty_npy_names_its_file(tmp_path, capsys):
    import numpy as np

    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 8), dtype=np.float32))
    _one_line(panderm_main(["concepts", "train-sae", "--embeddings", str(empty), "--out", str(tmp_path / "s")]),
              capsys, str(empty), "is empty")


@pytest.mark.parametrize("flag", ["--lr", "--min-lr", "--weight-decay"])
def test_a_nan_training_flag_is_one_line(tiny_panderm_v1, tiny_csv, tmp_path, capsys, flag):  # noqa: F811
    _one_line(panderm_main(["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv",
                            str(tiny_csv), "--device", "cpu", "--out", str(tmp_path / "ft"), flag, "nan"]),
              capsys, flag, "finite")
    assert not (tmp_path / "ft").exists()


def test_a_second_run_on_a_busy_folder_is_refused_and_leaves_it_alone(tiny_panderm_v1, tiny_csv, tmp_path,  # noqa: F811
                                                                      capsys):
    out = tmp_path / "run"
    out.mkdir()
    argv = ["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv", str(tiny_csv),
            "--epochs", "1", "--batch-size", "8", "--warmup-epochs", "0", "--bootstrap", "0", "--workers", "0",
            "--device", "cpu", "--out", str(out)]
    other = os.open(out, os.O_RDONLY)  # another run working in the folder holds its lock
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in ([], ["--resume"], ["--overwrite"]):
            _one_line(panderm_main(argv + extra), capsys, str(out), "in use by another run")
            assert out.is_dir() and not any(out.iterdir())
    finally:
        os.close(other)
    assert panderm_main(argv) == 0, capsys.readouterr().err  # the lock went with the other run
    fd = os.open(out, os.O_RDONLY)  # and this run let go of it when it ended
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_a_full_disk_is_one_line_and_keeps_nothing(ph2_small, tmp_path, capsys, monkeypatch):
    import panderm.report as report

    csv = _write(ph2_small, tmp_path / "d.csv")
    real = report.tempfile.mkstemp

    def full(*a, **kw):
        if "results" in kw.get("prefix", "") or "predictions" in kw.get("prefix", ""):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(kw["dir"]) / "results.json"))
        return real(*a, **kw)

    monkeypatch.setattr(report.tempfile, "mkstemp", full)
    out = tmp_path / "zs"
    _one_line(panderm_main(["zeroshot", "--model", "demo", "--csv", str(csv), "--classnames",
                            str(PH2 / "classes.csv"), "--device", "cpu", "--bootstrap", "0", "--out", str(out)]),
              capsys, "cannot write", "No space left on device (errno 28)")
    assert not out.exists()


def test_outputs_follow_the_umask(ph2_small, tmp_path, capsys):
    csv = _write(ph2_small, tmp_path / "d.csv")
    old = os.umask(0o022)
    try:
        out = tmp_path / "zs"
        assert panderm_main(["zeroshot", "--model", "demo", "--csv", str(csv), "--classnames",
                             str(PH2 / "classes.csv"), "--device", "cpu", "--bootstrap", "0", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_provenance_hashes_the_class_name_and_template_files(ph2_small, tmp_path, capsys):
    csv = _write(ph2_small, tmp_path / "d.csv")
    names = tmp_path / "names.txt"
    templates = tmp_path / "templates.txt"
    templates.write_text("a dermoscopic image of {c}.\n")

    def run(out, first):
        names.write_text(f"{first}\nmelanoma\n")
        assert panderm_main(["zeroshot", "--model", "demo", "--csv", str(csv), "--classnames", str(names),
                             "--templates", str(templates), "--device", "cpu", "--bootstrap", "0",
                             "--out", str(out)]) == 0, capsys.readouterr().err
        return json.loads((out / "results.json").read_text())["provenance"]["input_sha256"]

    a, b = run(tmp_path / "a", "nevus"), run(tmp_path / "b", "benign nevus")
    assert set(a) == {str(names), str(templates)}
    assert a[str(names)] != b[str(names)] and a[str(templates)] == b[str(templates)]


def test_main_door_keeps_each_named_runs_per_sample_csv(tiny_openclip, tmp_path, capsys, caplog):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_main", ROOT / "src" / "main.py")
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    logs = tmp_path / "logs"
    ph2 = ROOT / "data" / "sample" / "zero-shot-classification" / "ph2-2-zero-shot-test.csv"
    for name in ("one", "two"):
        rc = door.main(["--zeroshot-eval6", str(ph2), "--csv-img-key", "image_path", "--csv-label-key", "label",
                        "--model", f"local-dir:{tiny_openclip}", "--device", "cpu", "--workers", "0", "--logs",
                        str(logs), "--name", name, "--bootstrap", "0", "--precision", "fp32"])
        assert rc == 0, capsys.readouterr().err
    assert "PH2-2/tiny-clip.csv exists" in caplog.text  # the reference's shared file: replaced, with a warning
    shared = pd.read_csv(logs / "PH2-2" / "tiny-clip.csv")
    for name in ("one", "two"):  # each run's own copy stays
        pd.testing.assert_frame_equal(pd.read_csv(logs / name / "predictions" / "PH2-2" / "tiny-clip.csv"), shared)


def test_finetune_reruns_write_byte_identical_checkpoints(tiny_panderm_v1, tiny_csv, tmp_path, capsys):  # noqa: F811
    """Same flags and seed on CPU: the same weights, and the same bytes (no temp-file name inside the zip)."""
    for run in ("a", "b"):
        assert panderm_main(["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv",
                             str(tiny_csv), "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "1",
                             "--bootstrap", "0", "--device", "cpu", "--seed", "4", "--out", str(tmp_path / run)]) == 0
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_wrong_image_root_names_each_doors_own_flag(tmp_path, capsys):
    """The library says which setting is at fault (param="image_root"); each door names its own flag for it."""
    import importlib.util

    csv = PH2 / "ph2.csv"  # paths relative to the CSV's folder; every door below is pointed elsewhere

    def door(rel):
        spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.main

    cases = [
        (door("linear_probe/linear_eval.py"), ["--csv_path", str(csv), "--model", "demo", "--image_key", "image_path",
                                               "--root_path", str(tmp_path), "--output_dir", str(tmp_path / "o")],
         "--root_path"),
        (door("src/export_visual_features.py"), ["--csv_path", str(csv), "--img_col", "image_path", "--model_name",
                                                 "demo", "--data_root", str(tmp_path), "--output_dir",
                                                 str(tmp_path / "e")], "--data_root"),
        (panderm_main, ["features", "--model", "demo", "--csv", str(csv), "--image-col", "image_path", "--root",
                        str(tmp_path), "--out", str(tmp_path / "f.npy")], "--root"),
    ]
    for main, argv, flag in cases:
        last = _one_line(main(argv), capsys, "no image exists under", f"(set it with {flag})")
        assert "give it as" not in last
