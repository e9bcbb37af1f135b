"""The bad-input matrix, as real processes: a handful of doors run as `python ...` on a bad CSV.

The full matrix (every door x every bad input, in-process through the same `run_door`) is in
tests/test_bad_input_doors.py; these runs check what only a real process shows: the exit status, the
whole stderr (one line, no traceback) and `--debug` / PANDERM_DEBUG=1 keeping the traceback.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HAM = REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv"

CASES = {
    "missing CSV": (None, "not found"),
    "empty CSV": ("", "is empty"),
    "header only": ("image_path,label,diag,split\n", "no rows"),
    "no image column": ("filename,label,diag,split\nx.jpg,0,a,train\n", "not found"),
}


def door_argv(name, model, csv, out):
    emb = out / "emb.npy"
    return {
        "panderm features": ["-m", "panderm", "features", "--model", model, "--csv", csv, "--out", str(out / "f.npy")],
        "src/main.py": ["src/main.py", "--zeroshot-eval2", csv, "--csv-img-key", "image_path", "--csv-label-key",
                        "label", "--model", model, "--logs", str(out / "logs")],
        "linear_probe/linear_eval.py": ["linear_probe/linear_eval.py", "--csv_path", csv, "--image_key", "image_path",
                                        "--model", model, "--device", "cpu", "--output_dir", str(out / "lpe")],
        "1_train_clf_binary-class.py": ["automated-concept-discovery/1_train_clf_binary-class.py", "--csv", csv,
                                        "--embeddings", str(emb), "--output", str(out / "cbm")],
    }[name]


# one case per door keeps this to four processes (~3 s each for the torch import)
RUNS = [("panderm features", "no image column"), ("src/main.py", "header only"),
        ("linear_probe/linear_eval.py", "empty CSV"), ("1_train_clf_binary-class.py", "missing CSV")]


def _prepare(tmp_path, case):
    content, needle = CASES[case]
    csv = tmp_path / "bad.csv"
    if content is not None:
        csv.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "emb.npy", np.zeros((1, 4), np.float32))
    return csv, out, needle


@pytest.mark.parametrize("name,case", RUNS)
def test_door_process_rejects_bad_csv(tiny_openclip, tmp_path, name, case):
    csv, out, needle = _prepare(tmp_path, case)
    before = sorted(p.name for p in out.iterdir())
    r = subprocess.run([sys.executable, *door_argv(name, f"local-dir:{tiny_openclip}", str(csv), out)],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "PANDERM_DEBUG": "0"})
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2, f"{name}: exit {r.returncode} on {case}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, f"{name}: more than one stderr line on {case}:\n{r.stderr}"
    assert "error" in lines[0].lower() and needle in lines[0] and "bad.csv" in lines[0], lines[0]
    assert sorted(p.name for p in out.iterdir()) == before, f"{name} left output behind on {case}"


def test_debug_keeps_the_traceback(tiny_openclip, tmp_path):
    csv, out, _ = _prepare(tmp_path, "header only")
    argv = [sys.executable, *door_argv("panderm features", f"local-dir:{tiny_openclip}", str(csv), out)]
    r = subprocess.run(argv[:3] + ["--debug"] + argv[3:], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "DataError: CSV has a header but no rows" in r.stderr


def test_in_process_door_restores_the_sigterm_handler(tmp_path, capsys):
    from panderm.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["features", "--model", "demo", "--csv", str(tmp_path / "none.csv"), "--out", str(tmp_path / "f.npy")]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert "CSV not found" in capsys.readouterr().err
