"""Checkpoints from someone else: a crafted pickle never runs, a foreign file is one line, and the
checkpoints we write are plain tensors + containers with reproducible bytes."""
import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from panderm.checkpoint_io import load_torch, load_training_checkpoint, rng_state, save_torch, set_rng_state
from panderm.cli import main as panderm_main
from panderm.errors import ModelError

from test_finetune import tiny_csv  # noqa: F401 - fixture
from test_multimodal_e2e import _pad_rows

ROOT = Path(__file__).resolve().parents[1]
TINY_MM = ["--num-head", "2", "--meta-num-head", "2", "--att-depth", "1", "--meta-att-depth", "1", "--device", "cpu",
           "--batch-size", "8", "--workers", "0", "--bootstrap", "0"]


class _Exploit:
    """Unpickling this runs `exec`: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def _evil(path: Path, marker: Path, wrap: bool = True) -> Path:
    payload = {"model": _Exploit(marker), "meta": {"n_classes": 2}} if wrap else _Exploit(marker)
    torch.save(payload, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    return _evil(tmp_path / "evil.pt", marker), marker


def test_load_torch_refuses_a_pickle_that_runs_code(evil):
    path, marker = evil
    with pytest.raises(ModelError) as err:
        load_torch(path)
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg and "refused, not run" in msg and "\n" not in msg


def test_foreign_checkpoints_are_one_line_naming_what_is_missing(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(3), bare)
    with pytest.raises(ModelError, match=r"bare\.pt: not a finetune checkpoint: it holds a Tensor"):
        load_training_checkpoint(bare, ("model",), "finetune checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ModelError, match=r"other\.pt: not a finetune checkpoint: missing 'model', 'rng' "
                                         r"\(it has 'state_dict'\)"):
        load_training_checkpoint(other, ("model", "rng"), "finetune checkpoint")
    cut = tmp_path / "cut.pt"
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(100)}}, buf)
    cut.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ModelError, match=r"cut\.pt: not a readable finetune checkpoint"):
        load_training_checkpoint(cut, ("model",), "finetune checkpoint")


def test_saved_bytes_do_not_depend_on_the_file_name_and_hold_no_code(tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    payload = {"model": {"w": torch.randn(4, 3)}, "rng": rng_state(), "meta": {"config": {"lr": 1e-3}}}
    a, b = save_torch(tmp_path / "a.pt", payload), save_torch(tmp_path / "sub" / "last.pt", payload)
    assert a.read_bytes() == b.read_bytes()
    assert all(n.startswith("archive/") for n in zipfile.ZipFile(a).namelist())
    assert not list(tmp_path.rglob("*.tmp"))
    back = load_torch(a)  # weights_only=True reads the RNG state too
    assert torch.equal(back["model"]["w"], payload["model"]["w"])


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.normal()  # a cached Gaussian in numpy's legacy state
    save_torch(tmp_path / "s.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    set_rng_state(load_torch(tmp_path / "s.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]


def test_no_unsafe_load_anywhere_in_the_source():
    """One reader for torch files (checkpoint_io.load_torch); nothing else may unpickle."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    offenders = []
    for folder in ("src", "linear_probe", "multimodal_finetune", "automated-concept-discovery", "benchmarks",
                   "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0].replace("``torch.load(weights_only=True)``", "")  # prose
                if pattern.search(code) and not (path.name == "checkpoint_io.py" and "weights_only=True" in code):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# -- every door that takes a checkpoint ------------------------------------------------------


@pytest.fixture(scope="module")
def pad_csv(tmp_path_factory):
    csv = tmp_path_factory.mktemp("pad") / "pad.csv"
    _pad_rows((("train", 8), ("val", 4), ("test", 4))).to_csv(csv, index=False)
    return csv


def _finetune_argv(v1, csv, out):
    return ["finetune", "--model", "panderm-v1-base", "--checkpoint", str(v1), "--csv", str(csv), "--epochs", "1",
            "--batch-size", "8", "--warmup-epochs", "0", "--bootstrap", "0", "--workers", "0", "--device", "cpu",
            "--out", str(out)]


def _assert_refused(rc, capsys, marker, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not marker.exists(), "the checkpoint's code ran"
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and all(n in last for n in needles), err


def test_finetune_eval_and_resume_refuse_a_crafted_checkpoint(tiny_panderm_v1, tiny_csv, evil, tmp_path, capsys):
    path, marker = evil
    argv = _finetune_argv(tiny_panderm_v1, tiny_csv, tmp_path / "ev")
    _assert_refused(panderm_main(argv + ["--eval", str(path)]), capsys, marker, str(path), "refused, not run")
    run = tmp_path / "run"
    run.mkdir()
    _evil(run / "last.pt", marker)
    _assert_refused(panderm_main(_finetune_argv(tiny_panderm_v1, tiny_csv, run) + ["--resume"]), capsys, marker,
                    "last.pt", "refused, not run")


def test_finetune_eval_on_a_bare_tensor_is_one_line(tiny_panderm_v1, tiny_csv, tmp_path, capsys):
    bare = tmp_path / "bare.pt"
    torch.save(torch.zeros(2), bare)
    rc = panderm_main(_finetune_argv(tiny_panderm_v1, tiny_csv, tmp_path / "ev") + ["--eval", str(bare)])
    _assert_refused(rc, capsys, tmp_path / "nothing", "bare.pt", "holds a Tensor")


def test_multimodal_test_and_resume_refuse_a_crafted_checkpoint(tiny_panderm2, pad_csv, evil, tmp_path, capsys):
    from panderm.compat.multimodal_door import run_reference

    path, marker = evil
    common = ["--model", f"local-dir:{tiny_panderm2}", "--dataset", "pad", "--data-path", str(pad_csv),
              "--use-cli", *TINY_MM]
    rc = panderm_main(["multimodal", "test", *common, "--model-path", str(path), "--output-dir", str(tmp_path / "t")])
    _assert_refused(rc, capsys, marker, str(path), "refused, not run")
    rc = run_reference("test", ["--model_name", f"local-dir:{tiny_panderm2}", "--dataset", "pad", "--data_dir",
                                str(pad_csv), "--use_cli", "--cuda", "false", "--model_path", str(path),
                                "--output_dir", str(tmp_path / "d")])
    _assert_refused(rc, capsys, marker, str(path), "refused, not run")
    run = tmp_path / "run"
    run.mkdir()
    _evil(run / "last.pt", marker)
    rc = panderm_main(["multimodal", "train", *common, "--epochs", "1", "--output-dir", str(run), "--resume"])
    _assert_refused(rc, capsys, marker, "last.pt", "refused, not run")


def test_a_checkpoint_flag_the_model_cannot_use_is_an_error(evil, tmp_path, capsys):
    path, marker = evil
    csv = ROOT / "data" / "sample" / "ph2" / "ph2.csv"
    rc = panderm_main(["features", "--model", "demo", "--checkpoint", str(path), "--csv", str(csv),
                       "--out", str(tmp_path / "f.npy"), "--device", "cpu"])
    _assert_refused(rc, capsys, marker, "a checkpoint is not used (drop --checkpoint)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("linear_eval", ROOT / "linear_probe" / "linear_eval.py")
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    rc = door.main(["--csv_path", str(csv), "--model", "demo", "--checkpoint", str(path), "--device", "cpu",
                    "--output_dir", str(tmp_path / "lp"), "--model_preprocess", "--image_key", "image_path",
                    "--root_path", str(csv.parent)])
    _assert_refused(rc, capsys, marker, "a checkpoint is not used (drop --checkpoint)")


def test_a_weights_file_that_runs_code_is_refused_by_every_family_loader(evil, capsys):
    from panderm.models import load_encoder

    path, marker = evil
    for model in ("panderm-v1-base", "torchvision:resnet18", "MONET"):
        with pytest.raises(ModelError, match="refused, not run"):
            load_encoder(model, checkpoint=str(path))
    assert not marker.exists()


def test_a_killed_write_leaves_no_temp_file_for_good(tiny_panderm_v1, tiny_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = _finetune_argv(tiny_panderm_v1, tiny_csv, out)
    assert panderm_main(argv) == 0, capsys.readouterr().err
    stale = [out / ".last.pt.abc123.pt.tmp", out / ".best.pt.next.x9.pt.tmp"]  # what a kill -9 mid-write leaves
    for f in stale:
        f.write_bytes(b"half a checkpoint")
    argv[argv.index("--epochs") + 1] = "2"
    assert panderm_main(argv + ["--resume"]) == 0, capsys.readouterr().err
    assert not [f for f in stale if f.exists()] and load_torch(out / "last.pt")["epoch"] == 1
