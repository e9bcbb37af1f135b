"""The concept-discovery doors take the reference's own command lines.

Data below: every flag each reference door's argparse defines (PanDerm-2 / PanDerm-X
`automated-concept-discovery/*.py`) and the door calls of the reference shell scripts
(`script/automated-concept-discovery/**.sh`), as the shell would split them. They go through each door's
parser; the ISIC hair chain then runs verbatim (only the model swapped for the tiny one) in a folder laid out
as the reference expects, and its outputs are checked against direct library / sklearn calls.
"""
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
DOORS = REPO / "automated-concept-discovery"
SCRIPTS = REPO / "script" / "automated-concept-discovery"
D = 32  # the tiny open_clip model's embedding width

# Every flag of each reference door's argparse, with a value of the right type.
REFERENCE_ARGPARSE = {
    "train_sae.py": {"--data": "ham", "--expansion": "8", "--backbone": "PanDerm-v2", "--l1": "3e-5", "--trial": "t1",
                     "--save_dir": "emb/"},
    "0_extract_sae_activations.py": {"--checkpoint": "a.pth", "--embeddings": "e.npy", "--output": "o.npy",
                                     "--batch_size": "512", "--gpu": "2"},
    "1_train_clf_binary-class.py": {"--csv": "m.csv", "--embeddings": "e.npy", "--image_col": "ImageID",
                                    "--image_dir": "imgs", "--gpu": "2", "--output": "out"},
    "2_global_concept_viz_binary-class.py": {"--csv": "m.csv", "--embeddings": "e.npy", "--image_col": "ImageID",
                                             "--image_dir": "imgs", "--out_dir": "out", "--gpu": "2", "--topk": "10"},
    "3_train_biased-cbm_binary-class.py": {"--train_csv": "tr.csv", "--test_csv": "te.csv",
                                           "--train_embeddings": "tr.npy", "--test_embeddings": "te.npy",
                                           "--image_root": "imgs/", "--image_col": "ImageID", "--output": "out"},
    "4_intervention_CBM.py": {"--top_n": "5", "--concept": "hair", "--method": "matching", "--split": "test",
                              "--device": "cpu", "--data_dir": "d", "--result_dir": "r", "--project_root": "../",
                              "--sae_checkpoint": "a.pth", "--clip_model_name": "hf-hub:redlessone/PanDerm2",
                              "--clip_checkpoint": "c.pt",
                              "--importance_file": "before-intervention/classifier_weights.npy",
                              "--activation_file": "learned_activation.npy",
                              "--output_file": "learned_activation_after_intervention.npy"},
}
# Where a reference flag lands under another name here.
DEST = {("4_intervention_CBM.py", "--clip_model_name"): "model",
        ("4_intervention_CBM.py", "--clip_checkpoint"): "checkpoint"}
# The reference's defaults that carry meaning here (paths and run labels aside).
REFERENCE_DEFAULTS = {
    "train_sae.py": ({"--save_dir": "x"}, {"expansion": 8, "l1": 3e-5}),
    "0_extract_sae_activations.py": ({"--checkpoint": "a", "--embeddings": "e", "--output": "o"}, {"batch_size": 512}),
    "2_global_concept_viz_binary-class.py": ({"--csv": "c", "--embeddings": "e", "--out_dir": "o"}, {"topk": 10}),
    "3_train_biased-cbm_binary-class.py": (
        {"--train_csv": "a", "--test_csv": "b", "--train_embeddings": "c", "--test_embeddings": "d"}, {"output": None}),
    "4_intervention_CBM.py": ({"--sae_checkpoint": "a"}, {
        "top_n": 5, "concept": "hair", "method": "matching", "split": "test", "device": "cpu", "checkpoint": None,
        "importance_file": "before-intervention/classifier_weights.npy", "activation_file": "learned_activation.npy",
        "output_file": "learned_activation_after_intervention.npy"}),
}

# Door calls of the reference scripts (PanDerm-X), verbatim.
SAE_TRAINING = """
python train_sae.py \\
    --data Derm1M_v2 \\
    --backbone PanDerm-v2 \\
    --save_dir '../automated-concept-discovery-result/SAE-embeddings/' \\
    --expansion 6
"""
ISIC_HAIR = """
python automated-concept-discovery/0_extract_sae_activations.py \\
  --checkpoint automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
  --embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/train/all_embeddings.npy \\
  --output automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/train/learned_activation.npy

python automated-concept-discovery/0_extract_sae_activations.py \\
  --checkpoint automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
  --embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/test/all_embeddings.npy \\
  --output automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/test/learned_activation.npy

python automated-concept-discovery/3_train_biased-cbm_binary-class.py \\
  --train_csv meta-files/automated-concept-discovery/ISIC_hair_bias/train.csv \\
  --test_csv meta-files/automated-concept-discovery/ISIC_hair_bias/test.csv \\
  --train_embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/train/learned_activation.npy \\
  --test_embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/test/learned_activation.npy \\
  --image_root '../meta-files/automated-concept-discovery/ISIC_hair_bias/final_images/' \\
  --image_col 'ImageID' \\
  --output 'automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/before-intervention'

python automated-concept-discovery/4_intervention_CBM.py \\
    --top_n 5 \\
    --concept hair \\
    --method matching \\
    --split test \\
    --device cuda \\
    --data_dir automated-concept-discovery-result/ISIC_hair_bias/ \\
    --result_dir automated-concept-discovery-result/ISIC_hair_bias/PanDermv2 \\
    --sae_checkpoint automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
    --clip_model_name 'hf-hub:redlessone/PanDerm2'

python automated-concept-discovery/3_train_biased-cbm_binary-class.py \\
  --train_csv meta-files/automated-concept-discovery/ISIC_hair_bias/train.csv \\
  --test_csv meta-files/automated-concept-discovery/ISIC_hair_bias/test.csv \\
  --train_embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/train/learned_activation.npy \\
  --test_embeddings automated-concept-discovery-result/ISIC_hair_bias/PanDermv2/test/learned_activation_after_intervention.npy \\
  --image_root '../meta-files/automated-concept-discovery/ISIC_hair_bias/final_images/' \\
  --image_col 'ImageID'
"""
ISIC_OTHERS = """
python automated-concept-discovery/4_intervention_CBM.py \\
    --top_n 5 \\
    --concept 'purple ink' \\
    --method matching \\
    --split test \\
    --device cuda \\
    --data_dir automated-concept-discovery-result/ISIC_ink_bias/ \\
    --result_dir automated-concept-discovery-result/ISIC_ink_bias/PanDermv2 \\
    --sae_checkpoint automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
    --clip_model_name 'hf-hub:redlessone/PanDerm2'

python automated-concept-discovery/4_intervention_CBM.py \\
    --top_n 5 \\
    --concept 'calibration scale' \\
    --method matching \\
    --split test \\
    --device cuda \\
    --data_dir automated-concept-discovery-result/ISIC_ruler_bias/ \\
    --result_dir automated-concept-discovery-result/ISIC_ruler_bias/PanDermv2 \\
    --sae_checkpoint automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
    --clip_model_name 'hf-hub:redlessone/PanDerm2'
"""
CLINICAL = """
python automated-concept-discovery/0_extract_sae_activations.py \\
  --checkpoint /mnt/hdd/sdc/syyan/My_Code/PanDerm-X/automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \\
  --embeddings automated-concept-discovery-result/clinical-malignant/all_embeddings.npy \\
  --output automated-concept-discovery-result/clinical-malignant/learned_activation.npy

python automated-concept-discovery/1_train_clf_binary-class.py \\
  --csv meta-files/automated-concept-discovery/clinical-malignant/meta.csv \\
  --embeddings automated-concept-discovery-result/clinical-malignant/learned_activation.npy \\
  --image_col ImageID \\
  --image_dir meta-files/automated-concept-discovery/clinical-malignant/final_images \\
  --gpu 2 \\
  --output automated-concept-discovery-result/clinical-malignant/

python automated-concept-discovery/1_train_clf_binary-class.py \\
  --csv meta-files/automated-concept-discovery/clinical-malignant/meta.csv \\
  --embeddings automated-concept-discovery-result/clinical-malignant/all_embeddings.npy \\
  --image_col ImageID \\
  --image_dir meta-files/automated-concept-discovery/clinical-malignant/final_images \\
  --gpu 2
"""


def door_calls(text: str) -> list[tuple[str, list[str]]]:
    """(door file name, argv) of every `python ...<door>.py ...` in a shell text."""
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        m = re.match(r"\s*python\s+(\S+\.py)\s*(.*)$", line)
        if m and Path(m.group(1)).name in REFERENCE_ARGPARSE:
            calls.append((Path(m.group(1)).name, shlex.split(m.group(2))))
    return calls


ALL_REFERENCE_CALLS = door_calls(SAE_TRAINING + ISIC_HAIR + ISIC_OTHERS + CLINICAL)


def load_door(name: str):
    spec = importlib.util.spec_from_file_location("door_" + re.sub(r"\W", "_", name[:-3]), DOORS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(name: str, argv):
    return load_door(name).build_parser().parse_args([str(a) for a in argv])


def test_reference_calls_cover_the_scripts():
    assert {name for name, _ in ALL_REFERENCE_CALLS} == set(REFERENCE_ARGPARSE) - {
        "2_global_concept_viz_binary-class.py"}  # no reference script calls it
    assert len(ALL_REFERENCE_CALLS) == 11


@pytest.mark.parametrize("name", sorted(REFERENCE_ARGPARSE))
def test_every_reference_flag_is_accepted(name):
    flags = REFERENCE_ARGPARSE[name]
    args = parse(name, [x for kv in flags.items() for x in kv])
    for flag, value in flags.items():
        got = getattr(args, DEST.get((name, flag), flag[2:]))
        assert str(got) == value or got == type(got)(value), (flag, got, value)


@pytest.mark.parametrize("name", sorted(REFERENCE_DEFAULTS))
def test_reference_defaults(name):
    required, defaults = REFERENCE_DEFAULTS[name]
    args = parse(name, [x for kv in required.items() for x in kv])
    for dest, value in defaults.items():
        assert getattr(args, dest) == value, dest


@pytest.mark.parametrize("i", range(len(ALL_REFERENCE_CALLS)))
def test_reference_script_call_parses(i):
    name, argv = ALL_REFERENCE_CALLS[i]
    args = parse(name, argv)
    if name == "train_sae.py":
        assert args.expansion == 6 and args.save_dir == "../automated-concept-discovery-result/SAE-embeddings/"
    if name == "4_intervention_CBM.py":
        assert args.model == "hf-hub:redlessone/PanDerm2" and args.top_n == 5 and args.method == "matching"
        assert args.concept in ("hair", "purple ink", "calibration scale") and args.device == "cuda"
    if name == "3_train_biased-cbm_binary-class.py":
        assert args.image_col == "ImageID" and args.image_root.endswith("final_images/")
    if name == "1_train_clf_binary-class.py":
        assert args.gpu == 2 and args.image_col == "ImageID"


def test_our_scripts_call_doors_with_accepted_flags():
    """Every door call in script/automated-concept-discovery parses ($VARS stand in as '1')."""
    texts = {p: p.read_text() for p in SCRIPTS.rglob("*.sh")}
    called = set()
    for text in texts.values():
        for name, argv in door_calls(text):
            parse(name, ["1" if "$" in a else a for a in argv if a != "$@"])
            called.add(name)
    assert called == {name for name, _ in ALL_REFERENCE_CALLS}
    sae = texts[SCRIPTS / "SAE-training" / "PanDerm-v2.sh"]
    # PanDerm-2's script trains with the default 8 (the released 6144-latent checkpoint); PanDerm-X's passes 6.
    assert 'EXPANSION="${EXPANSION:-8}"' in sae and '--expansion "$EXPANSION"' in sae


# ------------------------------------------------------------------------------------------------------------
# The reference chain, run verbatim
# ------------------------------------------------------------------------------------------------------------


def run_door(name, argv, cwd, monkeypatch, capsys):
    monkeypatch.chdir(cwd)
    rc = load_door(name).main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    return out.out


@pytest.fixture
def reference_tree(tmp_path):
    """Embeddings and CSVs where the reference scripts look for them (label = last column, planted signal)."""
    rng = np.random.default_rng(7)
    result = tmp_path / "automated-concept-discovery-result"
    (tmp_path / "src").mkdir()
    sae_dir = result / "SAE-embeddings"
    sae_dir.mkdir(parents=True)
    np.save(sae_dir / "all_embeddings.npy", rng.normal(size=(96, D)).astype(np.float32))
    meta = tmp_path / "meta-files" / "automated-concept-discovery" / "ISIC_hair_bias"
    meta.mkdir(parents=True)
    for split, n in (("train", 80), ("test", 40)):
        y = np.tile([0, 1], n // 2)
        pd.DataFrame({"ImageID": [f"{split}{i}.jpg" for i in range(n)], "site": "back", "hair_bias": y}).to_csv(
            meta / f"{split}.csv", index=False)
        X = rng.normal(size=(n, D)).astype(np.float32)
        X[:, :4] += 2.0 * y[:, None]
        out = result / "ISIC_hair_bias" / "PanDermv2" / split
        out.mkdir(parents=True)
        np.save(out / "all_embeddings.npy", X)
    return tmp_path


def test_isic_chain_verbatim(reference_tree, tiny_openclip, monkeypatch, capsys):
    from panderm.features import extract_text_features
    from panderm.models import load_encoder
    from panderm.tasks.concepts.cbm import latents_for_text
    from panderm.tasks.concepts.sae import decoder_directions, load_sae, sae_activations

    root = reference_tree
    # SAE-training/PanDerm-v2.sh runs train_sae.py from src/ (200 epochs: one 96-row batch each).
    (name, argv), = door_calls(SAE_TRAINING)
    out = run_door(name, argv + ["--quiet"], root / "src", monkeypatch, capsys)
    assert "--data 'Derm1M_v2' ignored" in out and "--backbone 'PanDerm-v2' ignored" in out
    pth = root / "automated-concept-discovery-result" / "SAE-embeddings" / "autoencoder.pth"
    assert torch.load(pth, weights_only=True)["model_config"]["n_learned_features"] == 6 * D

    model_id = f"local-dir:{tiny_openclip}"
    calls = door_calls(ISIC_HAIR)
    outs = []
    for name, argv in calls:
        argv = [model_id if a == "hf-hub:redlessone/PanDerm2" else a for a in argv]
        outs.append(run_door(name, argv, root, monkeypatch, capsys))

    res = root / "automated-concept-discovery-result" / "ISIC_hair_bias" / "PanDermv2"
    sae, _ = load_sae(pth)
    codes = {}
    for split in ("train", "test"):
        codes[split] = np.load(res / split / "learned_activation.npy", allow_pickle=False)
        np.testing.assert_array_equal(codes[split], sae_activations(sae, np.load(res / split / "all_embeddings.npy")))
    meta = root / "meta-files" / "automated-concept-discovery" / "ISIC_hair_bias"
    y_tr, y_te = (pd.read_csv(meta / f"{s}.csv")["hair_bias"].to_numpy() for s in ("train", "test"))

    # 3_: the reference's classifier on the last column; --image_root / --image_col said to be ignored.
    clf = SGDClassifier(loss="log_loss", penalty="l1", alpha=0.001, random_state=42).fit(codes["train"], y_tr)
    w = np.load(res / "before-intervention" / "classifier_weights.npy", allow_pickle=False)
    np.testing.assert_array_equal(w, clf.coef_[0])
    assert "label column: hair_bias" in outs[2] and "--image_root" in outs[2] and "ignored" in outs[2]
    assert f"ROC-AUC: {roc_auc_score(y_te, clf.predict_proba(codes['test'])[:, 1]):.3f}" in outs[2]

    # 4_: the 5 live latents closest to the 'hair' text, zeroed; --data_dir said to be ignored.
    encoder = load_encoder(model_id)
    text = extract_text_features(encoder, ["hair"], cache=False)[0]
    expected = [h["latent"] for h in latents_for_text(decoder_directions(sae), text, w != 0, 5)]
    edited_path = res / "test" / "learned_activation_after_intervention.npy"
    info = json.loads(edited_path.with_suffix(".json").read_text())
    assert len(expected) == 5 and info["latents"] == expected and info["concept"] == "hair"
    edited = codes["test"].copy()
    edited[:, expected] = 0
    np.testing.assert_array_equal(np.load(edited_path, allow_pickle=False), edited)
    assert "--data_dir" in outs[3] and "ignored" in outs[3]

    # 3_ again: the same classifier on the edited test codes.
    assert f"ROC-AUC: {roc_auc_score(y_te, clf.predict_proba(edited)[:, 1]):.3f}" in outs[4]

    # The file flags and --clip_checkpoint are honoured: a reference-style checkpoint ('state_dict', 'module.')
    # of the same weights gives the same latents, read from and written to the names given.
    from safetensors.torch import load_file

    state = load_file(str(tiny_openclip / "open_clip_model.safetensors"))
    ckpt = root / "clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, ckpt)
    (res / "custom").mkdir()
    np.save(res / "custom" / "w.npy", w)
    np.save(res / "test" / "codes_copy.npy", codes["test"])
    _, argv = calls[3]
    argv = [model_id if a == "hf-hub:redlessone/PanDerm2" else a for a in argv]
    run_door("4_intervention_CBM.py", argv + ["--clip_checkpoint", ckpt, "--importance_file", "custom/w.npy",
                                              "--activation_file", "codes_copy.npy", "--output_file", "edited2.npy"],
             root, monkeypatch, capsys)
    np.testing.assert_array_equal(np.load(res / "test" / "edited2.npy", allow_pickle=False), edited)
    assert json.loads((res / "test" / "edited2.json").read_text())["latents"] == expected


def test_clinical_cbm_calls_verbatim(reference_tree, monkeypatch, capsys):
    """1_train_clf with the reference's --image_col/--image_dir/--gpu: same numbers as without them."""
    from panderm.tasks.concepts.cbm import evaluate_cbm

    root = reference_tree
    meta = root / "meta-files" / "automated-concept-discovery" / "clinical-malignant"
    meta.mkdir(parents=True)
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 30)
    pd.DataFrame({"ImageID": [f"i{i}.jpg" for i in range(60)], "malignant": y, "benign": 1 - y}).to_csv(
        meta / "meta.csv", index=False)  # third column: the reference's label (here 'benign')
    res = root / "automated-concept-discovery-result" / "clinical-malignant"
    res.mkdir(parents=True)
    X = np.abs(rng.normal(size=(60, 16))).astype(np.float32)
    X[:, 3] += 1.5 * (1 - y)
    np.save(res / "learned_activation.npy", X)
    name, argv = door_calls(CLINICAL)[1]
    out = run_door(name, argv + ["--n_splits", 3], root, monkeypatch, capsys)
    for flag in ("--image_col", "--image_dir", "--gpu"):
        assert any(line.startswith(flag) and "ignored" in line for line in out.splitlines()), flag
    assert "label column: benign" in out
    direct = evaluate_cbm(X, 1 - y, n_splits=3)
    assert f"Mean ROC-AUC: {direct['summary']['auroc']['mean']:.3f}" in out
    np.testing.assert_array_equal(np.load(res / "mean_classifier_weights.npy"), direct["coef_mean"][0])


def test_global_viz_reference_flags(reference_tree, tmp_path, monkeypatch, capsys):
    from panderm.tasks.concepts.retrieve import class_importance, load_class_importance

    csv = tmp_path / "m.csv"
    y = np.tile([0, 1], 10)
    pd.DataFrame({"ImageID": [f"i{i}" for i in range(20)], "a": 0, "mel": y}).to_csv(csv, index=False)
    X = np.random.default_rng(0).random((20, 12)).astype(np.float32)
    np.save(tmp_path / "c.npy", X)
    flags = dict(REFERENCE_ARGPARSE["2_global_concept_viz_binary-class.py"], **{
        "--csv": str(csv), "--embeddings": str(tmp_path / "c.npy"), "--out_dir": str(tmp_path / "viz"), "--topk": "3"})
    out = run_door("2_global_concept_viz_binary-class.py", [x for kv in flags.items() for x in kv], tmp_path,
                   monkeypatch, capsys)
    assert sum("ignored" in line for line in out.splitlines()) == 3
    saved = load_class_importance(tmp_path / "viz")
    for c, r in class_importance(X, y, 3).items():
        np.testing.assert_array_equal(saved[c]["top_indices"], r["top_indices"])
