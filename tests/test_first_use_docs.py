"""Issue 18, first use: the README's commands only use flags that exist, linear_eval.py says RANDOM WEIGHTS, retrieval's examples.png shows distinct wrapped captions."""
import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_first_use import _all_parsers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parsers():
    seen = dict(_all_parsers())
    captured = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture  # the segmentation door builds its parser inside main()
    try:
        try:
            _load(REPO / "segmentation" / "run.py", "door_segmentation_run").main([])
        except SystemExit:
            pass
    finally:
        argparse.ArgumentParser.parse_args = real
    seen["segmentation/run.py#0"] = captured[0]
    return seen


# -- README commands: every flag shown exists -----------------------------------------------------------------------

def readme_commands() -> list[str]:
    """The shell commands of README.md's ```bash blocks: continuation lines joined, comments dropped, split at
    `&&`, `;` and pipes."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            current = []
            for tok in tokens + ["&&"]:
                if tok in ("&&", ";", "|", "||"):
                    if current:
                        commands.append(current)
                    current = []
                else:
                    current.append(tok)
    return [shlex.join(c) for c in commands]


def _target(tokens: list[str]):
    """(parser name prefix, the tokens after the program) for a command that runs panderm or a door; else None."""
    if tokens[0] == "panderm":
        return "panderm", tokens[1:]
    if "-m" in tokens and tokens[tokens.index("-m") + 1:tokens.index("-m") + 2] == ["panderm"]:
        return "panderm", tokens[tokens.index("-m") + 2:]
    if tokens[0] in ("python", "python3") and len(tokens) > 1 and tokens[1].endswith(".py"):
        door = tokens[1]
        return (door if door == "src/main.py" else f"{door}#0"), tokens[2:]
    return None


def _resolve(parsers, prefix, args):
    """Descend into subcommands named by the leading tokens; returns (parser name, parser, remaining tokens)."""
    name = prefix
    args = list(args)
    while args:
        word = args[0].split("|")[0]  # `train|test` in a synopsis
        if f"{name} {word}" in parsers:
            name = f"{name} {word}"
            args = args[1:]
        else:
            break
    return name, parsers[name], args


def test_readme_commands_are_found():
    commands = readme_commands()
    assert len(commands) > 25, commands
    assert any(c.startswith("panderm features") for c in commands)
    assert any("linear_probe/linear_eval.py" in c for c in commands)


def test_every_flag_the_readme_shows_exists(parsers):
    checked, unknown = 0, []
    for command in readme_commands():
        target = _target(shlex.split(command))
        if target is None:
            continue  # bash script/..., pip, python -m venv: no panderm flags
        name, parser, rest = _resolve(parsers, *target)
        known = set(parser._option_string_actions)
        for tok in rest:
            flag = tok.strip("[]").split("=")[0]
            if not flag.startswith("-") or flag in ("-", "--"):
                continue
            checked += 1
            if flag not in known:
                unknown.append(f"{flag} in `{command}` ({name} --help)")
    assert checked > 60
    assert not unknown, "README flags missing from --help:\n" + "\n".join(unknown)


# -- linear_eval.py: RANDOM WEIGHTS ------------------------------------------------------------------------------

LP_CSV = REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"
REFERENCE_COLUMNS = ["Dataset", "W_F1", "AUROC", "BACC", "ACC", "AUPR"]


def _linear_eval(tmp_path, monkeypatch, random_init: bool):
    import panderm.models as models

    door = _load(REPO / "linear_probe" / "linear_eval.py", "door_linear_eval")
    real = models.load_encoder

    def load(*a, **k):
        encoder = real(*a, **k)
        encoder.random_init = random_init
        return encoder

    monkeypatch.setattr(models, "load_encoder", load)
    out = tmp_path / "lp"
    rc = door.main(["--csv_path", str(LP_CSV), "--image_key", "image_path", "--root_path", str(LP_CSV.parent),
                    "--model", "demo", "--model_preprocess", "--device", "cpu", "--num_workers", "0",
                    "--output_dir", str(out), "--csv_filename", "summary.csv"])
    return rc, out / "summary.csv"


def test_linear_eval_says_random_weights(tmp_path, monkeypatch, capsys):
    rc, summary = _linear_eval(tmp_path, monkeypatch, random_init=True)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM WEIGHTS: these numbers come from an untrained model" in captured.out
    frame = pd.read_csv(summary)
    assert list(frame.columns) == REFERENCE_COLUMNS + ["warning"]
    assert frame["warning"].str.startswith("RANDOM WEIGHTS").all()


def test_linear_eval_real_weights_keep_the_reference_columns(tmp_path, monkeypatch, capsys):
    rc, summary = _linear_eval(tmp_path, monkeypatch, random_init=False)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM WEIGHTS" not in captured.out
    assert list(pd.read_csv(summary).columns) == REFERENCE_COLUMNS


# -- retrieval examples.png: distinct, wrapped captions ---------------------------------------------------------

def test_retrieval_examples_show_distinct_wrapped_captions(tmp_path):
    from panderm.tasks.retrieval.data import load_pairs
    from panderm.tasks.retrieval.pipeline import examples_data

    long_a = "dermoscopic image; asymmetry: fully symmetric; pigment network: typical; " * 3 + "colors: brown"
    long_b = "dermoscopic image; asymmetry: fully symmetric; pigment network: typical; " * 3 + "colors: black"
    captions = [long_a] * 6 + [long_b, "melanoma", "nevus", "seborrheic keratosis", "basal cell carcinoma"]
    images = [f"img{i}.jpg" for i in range(len(captions))]
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"filename": images, "caption": captions}).to_csv(csv, index=False)
    pairs = load_pairs(csv, "filename", "caption", check_images=False)
    rng = np.random.default_rng(0)
    img = rng.normal(size=(len(captions), 8))
    txt = np.repeat(img[:1], len(captions), axis=0) + 1e-3 * rng.normal(size=(len(captions), 8))
    txt[[0, 1, 2, 3, 4, 5]] = img[0]  # the repeated caption scores highest for every query: 6 copies on top
    txt[6] = 0.999 * img[0]  # then the caption that shares its long prefix
    data = examples_data(pairs, img, txt, n_queries=3, k=5, width=60)
    assert len(data) == 3
    for d in data:
        texts = [c["text"] for c in d["captions"]]
        assert len(texts) == 5 and len(set(texts)) == 5, texts  # top-5 distinct texts, not one caption 5x
        assert texts.count(long_a) == 1
        for c in d["captions"]:
            assert " ".join(c["lines"]) == c["text"]  # wrapped, never cut
            assert all(len(line) <= 60 for line in c["lines"])
    first = data[0]["captions"]
    assert first[0]["text"] == long_a and first[0]["hit"]
    both = {c["text"] for c in first}
    assert long_a in both and long_b in both  # two captions sharing a long prefix stay distinguishable
    assert data[0]["captions"][0]["lines"] != data[0]["captions"][1]["lines"]
