"""Every task that writes results.json records how to rerun it: command line, package versions, model id and
weights fingerprint, CSV sha256, seed and device (report.provenance). Runs each task in-process on the tiny
models through its door."""
import hashlib
import json
import shlex

import numpy as np
import pytest
from test_bad_input_doors import DOORS, Ctx, call, world  # noqa: F401  (world is a fixture)

D = 32

# task -> (door, argv builder or None (DOORS' own), the keys that do not apply to it)
TASKS = {
    "zeroshot": ("panderm zeroshot", None, set()),
    "retrieval": ("panderm retrieval", None, set()),
    "linear-probe": ("panderm linear-probe", None, set()),
    "finetune": ("panderm finetune", None, set()),
    "multimodal train": ("panderm multimodal train", None, set()),
    "src/main.py zero-shot": ("src/main.py", None, set()),
    "concepts cbm": ("panderm concepts cbm", None, set()),
    "concepts retrieve": ("panderm concepts retrieve", None, {"seed"}),  # deterministic: no seed to record
    "concepts report": ("panderm concepts report", None, {"seed"}),
    "concepts train-sae": ("panderm concepts train-sae", None, {"csv_sha256"}),
    "concepts activations": ("panderm concepts activations", None, {"csv_sha256", "seed"}),
    "concepts explain": ("panderm", lambda c: ["concepts", "explain", "--model", c.model, "--device", "cpu", "--sae",
                                               c.sae, "--weights", c.w["base"] / "weights.npy", "--concepts", "hair",
                                               "--out", c.out / "exp"], {"csv_sha256", "seed"}),
    "concepts intervene": ("panderm", lambda c: ["concepts", "intervene", "--sae", c.sae, "--method", "topk",
                                                 "--train-csv", c.csv, "--test-csv", c.csv, "--train-codes", c.codes,
                                                 "--test-codes", c.codes, "--out", c.out / "int"], set()),
}


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("task", list(TASKS))
def test_results_json_has_provenance(world, task, tmp_path, capsys, monkeypatch):  # noqa: F811
    door, argv_of, not_applicable = TASKS[task]
    rel = DOORS[door][0] if argv_of is None else door
    build = argv_of or DOORS[door][1]
    csv = world["data"] / "good.csv"
    emb = world["base"] / ("sae_train.npy" if task in ("concepts train-sae", "concepts activations")
                           else "codes.npy")
    out = tmp_path / "out"
    out.mkdir()
    argv = [str(a) for a in build(Ctx(world, str(csv), str(emb), out))]
    monkeypatch.setattr("sys.argv", ["panderm" if rel == "panderm" else rel, *argv])
    rc, _, err = call(rel, argv, capsys)
    assert rc == 0, err
    [results] = list(out.rglob("results.json"))
    prov = json.loads(results.read_text())["provenance"]

    assert prov["command"] == shlex.join(["panderm" if rel == "panderm" else rel, *argv])
    assert prov["versions"]["panderm"] and prov["versions"]["torch"] and prov["versions"]["numpy"]
    model = prov["model"]
    assert model["model_id"] and isinstance(model["fingerprint"], str) and len(model["fingerprint"]) >= 12
    assert prov["device"] == "cpu"
    if "csv_sha256" in not_applicable:
        assert prov["csv_sha256"] == {}
    else:
        assert prov["csv_sha256"] == {str(csv): sha256(csv)}
    if "seed" not in not_applicable:
        assert prov["seed"] is not None and prov["seed"] != []
    if task.startswith("concepts"):  # their inputs are arrays and SAE files: hashed too
        hashed = prov["input_sha256"]
        source = world["base"] / "weights.npy" if task == "concepts explain" else emb
        assert hashed[str(source)] == sha256(source)


def test_features_sidecar_has_provenance(world, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    csv = world["data"] / "good.csv"
    rc, _, err = call("panderm", DOORS["panderm features"][1](Ctx(world, str(csv), "", out)), capsys)
    assert rc == 0, err
    meta = json.loads((out / "f.json").read_text())
    assert meta["provenance"]["csv_sha256"] == {str(csv): sha256(csv)}
    assert meta["provenance"]["model"]["fingerprint"] == meta["model"]["fingerprint"]
    assert np.load(out / "f.npy").shape == (8, D)
