"""Issue 18, first use: one-hot multimodal metadata, --model required, no flag abbreviations, an explicit
device that is not there, an unreachable hub found at once, inputs checked before torch is imported."""
import argparse
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from panderm.cli import build_parser
from panderm.cli import main as panderm_main

REPO = Path(__file__).resolve().parents[1]
PAD_DIR = REPO / "data" / "sample" / "pad_ufes20_sample"
PH2_CSV = REPO / "data" / "sample" / "ph2" / "ph2.csv"
DOORS = [REPO / "src" / "main.py", REPO / "src" / "export_visual_features.py",
         REPO / "linear_probe" / "linear_eval.py", REPO / "multimodal_finetune" / "train.py",
         REPO / "multimodal_finetune" / "test.py", *sorted((REPO / "automated-concept-discovery").glob("*.py"))]


# -- item 2: one-hot metadata ------------------------------------------------------------------

def _pad_meta_csv(folder: Path) -> Path:
    raw = pd.read_csv(PAD_DIR / "pad_ufes20_sample.csv")
    raw = pd.concat([raw[raw["split"] == s].head(n) for s, n in (("train", 16), ("val", 6), ("test", 6))])
    frame = pd.DataFrame({"clinical_path": [str(PAD_DIR / p) for p in raw["image_path"]],
                          "derm_path": [str(PAD_DIR / p) for p in raw["image_path"]],
                          "label": raw["label"].to_numpy(), "split": raw["split"].to_numpy(),
                          "age_approx": raw["age"].to_numpy(), "sex": raw["gender"].fillna("unknown").to_numpy()})
    csv = folder / "pad_meta.csv"
    frame.to_csv(csv, index=False)
    return csv


SMALL = ["--num-head", "2", "--meta-num-head", "2", "--att-depth", "1", "--meta-att-depth", "1", "--device", "cpu",
         "--batch-size", "8", "--workers", "0", "--bootstrap", "0", "--epochs", "1"]


def test_one_hot_metadata_trains_from_the_cli(tmp_path, capsys):
    csv = _pad_meta_csv(tmp_path)
    out = tmp_path / "run"
    rc = panderm_main(["multimodal", "train", "--model", "demo", "--dataset", "csv", "--data-path", str(csv),
                       "--class-num", "6", "--use-cli", "--use-meta", "--meta-cols", "age_approx,sex", *SMALL,
                       "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "meta_in_dim" not in err
    assert (out / "best.pt").is_file() and (out / "results.json").is_file()


def test_one_hot_metadata_trains_from_the_door(tmp_path, capsys):
    from panderm.compat.multimodal_door import run_reference

    csv = _pad_meta_csv(tmp_path)
    rc = run_reference("train", ["--model_name", "demo", "--dataset", "csv", "--data_path", str(csv), "--class_num", "6",
                                 "--use_cli", "--use_meta", "--meta_cols", "age_approx,sex", "--num_head", "2",
                                 "--meta_num_head", "2", "--att_depth", "1", "--meta_att_depth", "1", "--cuda", "false",
                                 "--batch_size", "8", "--num_workers", "0", "--bootstrap", "0", "--epochs", "1",
                                 "--output_dir", str(tmp_path / "door")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "meta_in_dim" not in err


# -- item 3: --model is required -------------------------------------------------------------------

MODEL_COMMANDS = [["features", "--csv", "x.csv", "--out", "x.npy"],
                  ["zeroshot", "--csv", "x.csv", "--classnames", "a,b"],
                  ["linear-probe", "--csv", "x.csv"], ["retrieval", "--csv", "x.csv"], ["finetune", "--csv", "x.csv"],
                  ["multimodal", "train", "--data-path", "x.csv"], ["multimodal", "test", "--data-path", "x.csv"],
                  ["concepts", "explain", "--cbm", "x"],
                  ["concepts", "retrieve", "--sae", "x", "--codes", "y", "--csv", "z", "--text", "t"],
                  ["concepts", "report", "--sae", "x", "--codes", "y", "--csv", "z"]]


@pytest.mark.parametrize("argv", MODEL_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_model_is_required_by_every_subcommand_that_loads_one(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_intervene_needs_model_only_for_matching(tmp_path, capsys):
    argv = ["concepts", "intervene", "--sae", "s", "--train-csv", "a.csv", "--test-csv", "b.csv", "--train-codes",
            "a.npy", "--test-codes", "b.npy", "--out", str(tmp_path / "i")]
    assert build_parser().parse_args([*argv, "--method", "topk"]).model is None  # no text tower needed
    assert panderm_main([*argv, "--concept", "hair"]) == 2
    err = capsys.readouterr().err
    assert "--method matching needs --model" in err, err


def test_zeroshot_without_model_stops(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        panderm_main(["zeroshot", "--csv", str(PH2_CSV), "--classnames", "a,b,c", "--out",
                      str(tmp_path / "z")])
    assert exc.value.code == 2
    assert "the following arguments are required: --model" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_demo_keeps_its_default_model():
    assert build_parser().parse_args(["demo"]).model == "demo"


def test_api_model_is_required():
    import inspect

    from panderm import PanDerm2

    params = inspect.signature(PanDerm2.from_pretrained).parameters
    assert params["model_id"].default is inspect.Parameter.empty
    assert params["device"].default == "auto"
    with pytest.raises(TypeError):
        PanDerm2.from_pretrained()


# -- item 6: no abbreviations ------------------------------------------------------------------------

def _load_door(path: Path):
    spec = importlib.util.spec_from_file_location(f"door_{path.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_parsers():
    """Every ArgumentParser the CLI and the doors build (subparsers included), by name."""
    seen = {}

    def walk(name, parser):
        seen[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(f"{name} {sub_name}", sub)

    walk("panderm", build_parser())
    from panderm.compat.main_door import build_parser as main_parser
    from panderm.compat.multimodal_door import reference_parser

    walk("src/main.py", main_parser())
    walk("multimodal train.py", reference_parser("train"))
    walk("multimodal test.py", reference_parser("test"))
    captured = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        for path in DOORS:
            module = _load_door(path)
            before = len(captured)
            if hasattr(module, "build_parser"):
                captured.append(module.build_parser())
            else:
                try:
                    module.main([])
                except SystemExit:
                    pass
            for i, parser in enumerate(captured[before:]):
                walk(f"{path.relative_to(REPO)}#{i}", parser)
    finally:
        argparse.ArgumentParser.parse_args = real
    return seen


def test_every_parser_refuses_abbreviations():
    parsers = _all_parsers()
    assert len(parsers) > 25  # the panderm subcommands, the concepts actions and every door
    loose = sorted(name for name, p in parsers.items() if p.allow_abbrev)
    assert not loose, f"allow_abbrev is on in: {loose}"
    assert any(name.startswith("linear_probe/linear_eval.py") for name in parsers)
    assert any(name.startswith("automated-concept-discovery/train_sae.py") for name in parsers)


def test_seed_is_not_taken_as_seeds(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["linear-probe", "--model", "demo", "--csv", "x.csv", "--seed", "3"])
    assert "unrecognized arguments: --seed 3" in capsys.readouterr().err


# -- item 7: an explicit device that is not there ---------------------------------------------------------

def test_explicit_cuda_without_gpu_is_an_error(monkeypatch):
    import torch

    from panderm.cli.doors import resolve_device
    from panderm.errors import PandermError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"  # a door's reference default: the GPU when present
    assert resolve_device("cpu") == "cpu"
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(PandermError, match="no CUDA GPU is available"):
            resolve_device(asked)
    with pytest.raises(PandermError, match="not a device"):
        resolve_device("gpu")


def test_auto_picks_cuda_when_present(monkeypatch):
    import torch

    from panderm.cli.doors import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"


def test_cli_device_cuda_without_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = panderm_main(["zeroshot", "--model", "demo", "--csv", str(PH2_CSV), "--classnames", "a,b,c",
                       "--device", "cuda", "--out", str(tmp_path / "z"), "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device cuda" in err and "no CUDA GPU" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert build_parser().parse_args(["zeroshot", "--model", "demo", "--csv", "x"]).device == "auto"


def test_api_device_cuda_without_gpu_is_an_error(monkeypatch):
    import torch

    from panderm import PanDerm2
    from panderm.errors import PandermError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PandermError, match="no CUDA GPU"):
        PanDerm2.from_pretrained("demo", device="cuda")
    assert PanDerm2.from_pretrained("demo").encoder.device.type == "cpu"


# -- item 9: an unreachable hub is found at once ---------------------------------------------------------

_COUNTING = r'''
import socket, sys, atexit
n = [0]
orig = socket.socket.connect
def connect(self, addr, *a):
    if isinstance(addr, tuple) and addr[1] == PORT:
        n[0] += 1
    return orig(self, addr, *a)
socket.socket.connect = connect
atexit.register(lambda: print("HUB-ATTEMPTS", n[0], file=sys.stderr))
from panderm.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _offline_run(args, tmp_path, hub_cache=None):
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_CACHE=str(hub_cache or tmp_path / "hf-hub"), PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, "-c", _COUNTING.replace("PORT", str(port)), *args], env=env,
                       capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    attempts = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("HUB-ATTEMPTS")]
    return r, attempts[0] if attempts else None


@pytest.mark.parametrize("model", ["hf-hub:org/not-cached", "hf-clip:org/not-cached", "hf-vision:org/not-cached"])
def test_unreachable_hub_is_one_try_and_names_hf_hub_offline(model, tmp_path):
    r, attempts = _offline_run(["features", "--model", model, "--csv", str(PH2_CSV), "--image-col", "image_path",
                                "--out", str(tmp_path / "f.npy"), "--device", "cpu"], tmp_path)
    err = [line for line in r.stderr.splitlines() if not line.startswith("HUB-ATTEMPTS")]
    assert r.returncode == 2, r.stderr
    assert attempts is not None and attempts <= 1, (attempts, r.stderr)  # huggingface_hub alone: 8 with back-off
    assert not any("Retrying" in line for line in err), r.stderr
    last = err[-1]
    assert last.startswith("panderm: error:") and "HF_HUB_OFFLINE=1" in last, r.stderr
    assert str(tmp_path / "hf-hub") in last, last  # the cache it looked in


def test_unreachable_hub_still_loads_a_cached_model(tiny_openclip, tmp_path):
    cache = Path(os.environ["HF_HUB_CACHE"])  # conftest's cache, where tiny_openclip sits as test/tiny-clip
    r, attempts = _offline_run(["features", "--model", "hf-hub:test/tiny-clip", "--csv", str(PH2_CSV),
                                "--image-col", "image_path", "--out", str(tmp_path / "f.npy"), "--device", "cpu",
                                "--no-cache"], tmp_path, hub_cache=cache)
    assert r.returncode == 0, r.stderr
    assert attempts is not None and attempts <= 1, (attempts, r.stderr)
    assert (tmp_path / "f.npy").is_file()


# -- item 10: inputs checked before torch -------------------------------------------------------------------

_WATCH = r'''
import runpy, sys
door = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    if door == "panderm":
        from panderm.cli import main
        rc = main(sys.argv[1:])
    else:
        runpy.run_path(door, run_name="__main__")
        rc = 0
except SystemExit as exc:
    rc = exc.code
print("TORCH-IMPORTED", "torch" in sys.modules, file=sys.stderr)
sys.exit(rc)
'''

MISSING = "/nonexistent/missing.csv"
EARLY = {
    "panderm zeroshot": ["panderm", "zeroshot", "--model", "demo", "--csv", MISSING, "--classnames", "a,b"],
    "panderm linear-probe": ["panderm", "linear-probe", "--model", "demo", "--csv", MISSING],
    "panderm retrieval": ["panderm", "retrieval", "--model", "demo", "--csv", MISSING],
    "panderm features": ["panderm", "features", "--model", "demo", "--csv", MISSING, "--out", "f.npy"],
    "panderm finetune": ["panderm", "finetune", "--model", "demo", "--csv", MISSING],
    "panderm multimodal": ["panderm", "multimodal", "train", "--model", "demo", "--dataset", "csv", "--data-path",
                           MISSING, "--use-cli"],
    "src/main.py": [str(REPO / "src" / "main.py"), "--zeroshot-eval1", MISSING, "--csv-label-key", "label"],
    "linear_eval.py": [str(REPO / "linear_probe" / "linear_eval.py"), "--csv_path", MISSING, "--model", "demo"],
    "export_visual_features.py": [str(REPO / "src" / "export_visual_features.py"), "--csv_path", MISSING,
                                  "--data_root", "."],
    "multimodal train.py": [str(REPO / "multimodal_finetune" / "train.py"), "--dataset", "csv", "--data_path",
                            MISSING, "--use_cli"],
}


def _watch(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-c", _WATCH, *argv], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=1200)
    return r, "TORCH-IMPORTED False" in r.stderr


@pytest.mark.parametrize("door", list(EARLY))
def test_missing_csv_is_reported_before_torch_is_imported(door, tmp_path):
    r, before_torch = _watch(EARLY[door], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "CSV not found" in r.stderr and MISSING in r.stderr, r.stderr
    assert before_torch, r.stderr


def test_out_holding_a_run_is_refused_before_torch_is_imported(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "results.json").write_text("{}")
    r, before_torch = _watch(["panderm", "zeroshot", "--model", "demo", "--csv", str(PH2_CSV), "--classnames",
                              "a,b", "--out", str(busy)], tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert before_torch, r.stderr
    r, before_torch = _watch([str(REPO / "multimodal_finetune" / "train.py"), "--dataset", "csv", "--data_path",
                              str(PH2_CSV), "--use_cli", "--output_dir", str(busy)], tmp_path)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "--output_dir" in r.stderr, r.stderr
    assert before_torch, r.stderr
