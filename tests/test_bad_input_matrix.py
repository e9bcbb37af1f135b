"""The same bad CSVs fed to every door: one clear line naming the file or column, non-zero exit, no traceback,
no output left behind."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HAM = REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv"


def doors(model, csv, out):
    """(name, argv) for each door, pointed at `csv` and writing under `out`."""
    emb = out / "emb.npy"
    return [
        ("panderm features", ["-m", "panderm", "features", "--model", model, "--csv", csv, "--out", str(out / "f.npy")]),
        ("panderm zeroshot", ["-m", "panderm", "zeroshot", "--model", model, "--csv", csv, "--classnames", "a,b,c,d,e,f,g",
                              "--out", str(out / "zs")]),
        ("panderm retrieval", ["-m", "panderm", "retrieval", "--model", model, "--csv", csv, "--caption-col", "diag",
                               "--out", str(out / "ret")]),
        ("panderm linear-probe", ["-m", "panderm", "linear-probe", "--model", model, "--csv", csv, "--out", str(out / "lp")]),
        ("src/main.py", ["src/main.py", "--zeroshot-eval2", csv, "--csv-img-key", "image_path", "--csv-label-key", "label",
                         "--model", model, "--logs", str(out / "logs")]),
        ("src/export_visual_features.py", ["src/export_visual_features.py", "--model_name", model, "--csv_path", csv,
                                           "--img_col", "image_path", "--data_root", str(HAM.parent), "--device", "cpu",
                                           "--output_dir", str(out / "exp")]),
        ("linear_probe/linear_eval.py", ["linear_probe/linear_eval.py", "--csv_path", csv, "--image_key", "image_path",
                                         "--model", model, "--device", "cpu", "--output_dir", str(out / "lpe")]),
        ("1_train_clf_binary-class.py", ["automated-concept-discovery/1_train_clf_binary-class.py", "--csv", csv,
                                         "--embeddings", str(emb), "--output", str(out / "cbm")]),
    ]


CASES = {
    "missing CSV": (None, "not found"),
    "empty CSV": ("", "is empty"),
    "header only": ("image_path,label,diag,split\n", "no rows"),
    "no image column": ("filename,label,diag,split\nx.jpg,0,a,train\n", "not found"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_door_rejects_bad_csv(tiny_openclip, tmp_path, case):
    content, needle = CASES[case]
    csv = tmp_path / "bad.csv"
    if content is not None:
        csv.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "emb.npy", np.zeros((1, 4), np.float32))
    before = sorted(p.name for p in out.iterdir())
    for name, argv in doors(f"local-dir:{tiny_openclip}", str(csv), out):
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO)
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        assert r.returncode != 0, f"{name}: exit 0 on {case}"
        assert "Traceback" not in r.stderr, f"{name}: traceback on {case}:\n{r.stderr}"
        # The CBM door reads labels and embeddings only: a missing image column is no error there, but the
        # one-column CSV still fails cleanly for its labels.
        expected = "needs exactly 2" if (name.startswith("1_train_clf") and case == "no image column") else needle
        assert lines and "error" in lines[-1].lower() and expected in lines[-1], f"{name} on {case}: {lines[-1:]}"
        assert "bad.csv" in lines[-1] or "column" in lines[-1], f"{name} does not name the file: {lines[-1]}"
        assert sorted(p.name for p in out.iterdir()) == before, f"{name} left output behind on {case}"
