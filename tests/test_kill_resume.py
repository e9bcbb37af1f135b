"""Kill and resume with a real signal: `panderm features` and `panderm finetune` run as processes, get SIGTERM
mid-run, exit cleanly (status 130, no traceback), and a rerun finishes to the same bytes / weights as a run that
was never interrupted, redoing only the unfinished work.
"""
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

#: kill/resume runs real child processes and waits for them: slow, still run by .ci/run
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
HAM_DIR = REPO / "data" / "sample" / "ham10000_sample"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PANDERM_DEBUG": "0"}


def _start(args, cwd=REPO):
    return subprocess.Popen([sys.executable, "-m", "panderm", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(args):
    p = _start(args)
    out, err = p.communicate(timeout=1200)  # hang guard only
    return p.returncode, out, err


def _terminate_when(proc, ready, timeout=1200.0):
    """SIGTERM `proc` as soon as `ready()` holds; returns (returncode, stdout, stderr).

    `ready` is polled: the timeout is only a hang guard, never a speed requirement."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before it could be interrupted (exit {proc.returncode}):\n{err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no progress seen in time")
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=1200)
    return proc.returncode, out, err


def test_features_sigterm_then_resume_equals_uninterrupted(tiny_openclip, tmp_path):
    rows = 600
    images = pd.read_csv(HAM_DIR / "ham10000_sample.csv")["image_path"]
    csv = tmp_path / "many.csv"
    pd.DataFrame({"image_path": [images[i % len(images)] for i in range(rows)]}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    common = ["features", "--model", f"local-dir:{tiny_openclip}", "--csv", csv, "--root", HAM_DIR,
              "--batch-size", 2, "--workers", 0, "--device", "cpu"]

    def progress():
        found = list(cache.glob("*.partial.json"))
        if not found:
            return None
        try:
            return json.loads(found[0].read_text())
        except (OSError, ValueError):  # caught between writes: try again
            return None

    proc = _start([*common, "--cache-dir", cache, "--out", tmp_path / "resumed.npy"])
    rc, _, err = _terminate_when(proc, lambda: (progress() or {}).get("done", 0) >= 40)
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "panderm: interrupted"
    assert not (tmp_path / "resumed.npy").exists()  # no output from an interrupted run
    record = progress()
    done = record["done"]
    assert record["n"] == rows and 40 <= done < rows and done % 2 == 0, record
    assert [p.name for p in cache.glob("*.partial.npy")], "the partial features were not kept"
    assert not list(tmp_path.glob(".resumed.npy.*")), "a temporary output file was left behind"

    rc, _, err = _run([*common, "--cache-dir", cache, "--out", tmp_path / "resumed.npy"])
    assert rc == 0, err[-2000:]
    # The rerun starts at the first unfinished row: its progress bar counts rows - done images, no more. (The
    # "resuming an interrupted extraction at row ..." INFO line is not shown: setup_logging leaves the root
    # logger at WARNING.)
    totals = {int(t) for t in re.findall(r"\d+/(\d+) (?:\[|img)", err)}  # a tqdm bar or a log line
    assert totals == {rows - done}, totals
    assert not list(cache.glob("*.partial.*")) and not list(cache.glob("*.tmp"))

    rc, _, err = _run([*common, "--no-cache", "--out", tmp_path / "straight.npy"])
    assert rc == 0, err[-2000:]
    assert "resuming" not in err
    a = (tmp_path / "resumed.npy").read_bytes()
    b = (tmp_path / "straight.npy").read_bytes()
    assert a == b
    feats = np.load(tmp_path / "straight.npy")
    assert feats.shape == (rows, 32) and np.abs(feats).sum() > 0
    np.testing.assert_array_equal(feats[0], feats[len(images)])  # same image, same row


@pytest.fixture(scope="module")
def ft_csv(tmp_path_factory):
    """32 train / 8 val / 8 test small PNGs, 2 classes."""
    root = tmp_path_factory.mktemp("ft-kill")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 32), ("val", 8), ("test", 8)):
        for i in range(n):
            c = i % 2
            arr = np.clip(80 + 90 * c + rng.normal(0, 50, size=(36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "img" / f"{split}{i}.png")
            rows.append({"image_path": f"img/{split}{i}.png", "label": c, "split": split})
    pd.DataFrame(rows).to_csv(root / "data.csv", index=False)
    return root / "data.csv"


def test_finetune_sigterm_then_resume_equals_uninterrupted(tiny_panderm_v1, ft_csv, tmp_path):
    epochs = 3
    common = ["finetune", "--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", ft_csv,
              "--device", "cpu", "--epochs", epochs, "--warmup-epochs", 1, "--batch-size", 2, "--workers", 0,
              "--bootstrap", 0, "--seed", 3, "--weighted-sampler"]
    part = tmp_path / "part"

    def epoch_saved():
        return (part / "last.pt").is_file()

    proc = _start([*common, "--out", part, "--resume"])
    rc, _, err = _terminate_when(proc, epoch_saved)
    assert rc == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "panderm: interrupted"
    killed_at = torch.load(part / "last.pt", weights_only=False)["epoch"]
    assert 0 <= killed_at < epochs - 1, "the run finished before the signal: nothing left to resume"
    assert not (part / "results.json").exists()
    assert not [p.name for p in part.iterdir() if p.name.endswith(".tmp")]

    # The log is written just before last.pt: a signal in between leaves one line of an unsaved epoch,
    # which the resume drops before rerunning that epoch.
    before = sum(json.loads(line)["epoch"] <= killed_at for line in (part / "log.jsonl").read_text().splitlines())
    rc, out, err = _run([*common, "--out", part, "--resume"])
    assert rc == 0, err[-2000:]
    log = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(epochs))
    # the rerun trained only the epochs after the saved checkpoint
    assert [r["epoch"] for r in log[before:]] == list(range(killed_at + 1, epochs))

    full = tmp_path / "full"
    rc, _, err = _run([*common, "--out", full])
    assert rc == 0, err[-2000:]
    a = torch.load(full / "last.pt", weights_only=False)
    b = torch.load(part / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == epochs - 1
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    full_log = {r["epoch"]: r for r in map(json.loads, (full / "log.jsonl").read_text().splitlines())}
    assert sorted(full_log) == list(range(epochs))
    for r in log:  # every epoch either run saw: the same per-step losses as the uninterrupted run
        assert r["step_losses"] == full_log[r["epoch"]]["step_losses"], r["epoch"]
    assert json.loads((full / "results.json").read_text())["metrics"] == \
        json.loads((part / "results.json").read_text())["metrics"]
