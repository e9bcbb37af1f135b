"""Zero-shot classification against an independent computation written from the reference spec."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torchvision import transforms as T

import in_process
from panderm.data.benchmarks import get_benchmark
from panderm.data.templates import SKIN_TEMPLATES

REPO = Path(__file__).resolve().parents[1]
ZS = REPO / "data" / "sample" / "zero-shot-classification"


def reference_probs(model_dir, csv, classnames):
    """Spec §2.4–2.5 by hand, on open_clip directly: normalise prompts, mean, renormalise; softmax(100·cos)."""
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tok = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    model.eval()
    tf = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                    T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    frame = pd.read_csv(csv)
    with torch.no_grad():
        w = []
        for c in classnames:
            t = model.encode_text(tok([tpl.format(c=c) for tpl in SKIN_TEMPLATES]))
            t = t / t.norm(dim=-1, keepdim=True)
            m = t.mean(0)
            w.append(m / m.norm())
        W = torch.stack(w, dim=1)
        x = torch.stack([tf(Image.open(REPO / p).convert("RGB")) for p in frame["image_path"]])
        f = model.encode_image(x)
        f = f / f.norm(dim=-1, keepdim=True)
        return (100.0 * f @ W).softmax(dim=-1).numpy(), frame["label"].to_numpy()


def run_main(*args):
    """src/main.py in this process (its process smoke test: test_bad_input_matrix)."""
    from panderm.compat.main_door import main

    return in_process.run(main, args)


def test_main_py_reproduces_reference_probabilities_and_keys(tiny_openclip, tmp_path):
    logs = tmp_path / "logs"
    r = run_main("--zeroshot-eval1", str(ZS / "pad-zero-shot-test.csv"),
                 "--zeroshot-eval2", str(ZS / "HAM-official-7-zero-shot-test.csv"),
                 "--zeroshot-eval6", str(ZS / "ph2-2-zero-shot-test.csv"),
                 "--csv-img-key", "image_path", "--csv-label-key", "label", "--model", f"local-dir:{tiny_openclip}",
                 "--device", "cpu", "--workers", "0", "--logs", str(logs), "--name", "run1", "--bootstrap", "50",
                 "--precision", "fp32")  # float32 here; the default amp (CPU autocast) is checked further down
    assert r.returncode == 0, r.stderr
    line = json.loads((logs / "run1" / "checkpoints" / "results.jsonl").read_text().strip())
    expected_keys = {"zeroshot-pad-wf1", "zeroshot-pad-acc", "zeroshot-ham-wf1", "zeroshot-ham-acc",
                     "zeroshot-PH2-auroc", "zeroshot-PH2-acc"}
    assert set(line) == expected_keys
    for folder, csv, bench, prefix in [("PAD-6", "pad-zero-shot-test.csv", "PAD-6", "pad"),
                                       ("HAM-7", "HAM-official-7-zero-shot-test.csv", "HAM-7", "ham"),
                                       ("PH2-2", "ph2-2-zero-shot-test.csv", "PH2-2", "PH2")]:
        per_sample = pd.read_csv(logs / folder / "tiny-clip.csv")
        k = get_benchmark(bench).num_classes
        assert list(per_sample.columns) == ["image_path", "true_label", "predicted_label"] + [
            f"probability_class_{i}" for i in range(k)]
        probs, labels = reference_probs(tiny_openclip, ZS / csv, get_benchmark(bench).classnames)
        ours = per_sample[[f"probability_class_{i}" for i in range(k)]].to_numpy()
        np.testing.assert_allclose(ours, probs, atol=1e-5)
        assert (per_sample["true_label"].to_numpy() == labels).all()
        pred = probs.argmax(1)
        assert (per_sample["predicted_label"].to_numpy() == pred).all()
        assert line[f"zeroshot-{prefix}-acc"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)
        if bench == "PH2-2":
            onehot = np.eye(k)[labels]
            ref_auc = roc_auc_score(onehot, probs, multi_class="ovr", average="macro")
            assert line["zeroshot-PH2-auroc"] == pytest.approx(ref_auc, abs=1e-6)
        else:
            assert line[f"zeroshot-{prefix}-wf1"] == pytest.approx(f1_score(labels, pred, average="weighted"), abs=1e-9)
    results = json.loads((logs / "run1" / "results.json").read_text())
    assert set(results["datasets"]) == {"PAD-6", "HAM-7", "PH2-2"}
    ci = results["datasets"]["PAD-6"]["ci95"]["accuracy"]
    assert ci["ci_low"] <= results["datasets"]["PAD-6"]["metrics"]["accuracy"] <= ci["ci_high"]
    assert (logs / "run1" / "PAD-6" / "confusion_matrix.png").stat().st_size > 1000
    assert (logs / "run1" / "params.txt").is_file() and (logs / "run1" / "out.log").is_file()
    # A second run with the same name aborts, as the reference does.
    again = run_main("--zeroshot-eval1", str(ZS / "pad-zero-shot-test.csv"), "--csv-img-key", "image_path",
                     "--csv-label-key", "label", "--model", f"local-dir:{tiny_openclip}", "--device", "cpu",
                     "--logs", str(logs), "--name", "run1")
    assert again.returncode != 0 and "Experiment already exists" in again.stderr and "Traceback" not in again.stderr


def _panderm(*args):
    """`panderm` in this process (its process smoke tests: test_cli_features)."""
    from panderm.cli import main

    return in_process.run(main, args)


def test_cli_custom_csv_with_class_name_labels(tiny_openclip, ham_csv, tmp_path):
    out = tmp_path / "run"
    r = _panderm("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--classnames",
                 str(ham_csv.parent / "classes.csv"), "--label-col", "diag", "--out", str(out), "--bootstrap", "20")
    assert r.returncode == 0, r.stderr
    assert "ham10000_sample" in r.stdout and "ACC" in r.stdout
    res = json.loads((out / "results.json").read_text())
    entry = res["datasets"]["ham10000_sample"]
    preds = pd.read_csv(out / "ham10000_sample" / "predictions.csv")
    truth = pd.read_csv(ham_csv)["label"].to_numpy()
    assert (preds["label"].to_numpy() == truth).all()
    assert entry["metrics"]["accuracy"] == pytest.approx(accuracy_score(truth, preds["pred"]))
    assert res["provenance"]["model"]["model_id"] == f"local-dir:{tiny_openclip}"
    assert (out / "ham10000_sample" / "confusion_matrix.png").is_file()
    # The run folder is not overwritten without --overwrite.
    again = _panderm("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--classnames",
                     str(ham_csv.parent / "classes.csv"), "--label-col", "diag", "--out", str(out))
    assert again.returncode != 0 and "already holds a run" in again.stderr


@pytest.mark.parametrize("args,needle", [
    (["--zeroshot_eval_custom", "HAM", "--classnames", "a,b,c"], "outside 0..2"),
    (["--zeroshot-eval2", "HAM"], None),
])
def test_main_py_bad_inputs(tiny_openclip, tmp_path, args, needle):
    csv = ZS / "HAM-official-7-zero-shot-test.csv"
    args = [str(csv) if a == "HAM" else a for a in args]
    if needle is None:
        # A label beyond the class list: HAM labels relabelled to 7.
        bad = tmp_path / "bad.csv"
        frame = pd.read_csv(csv)
        frame.loc[3, "label"] = 7
        frame.to_csv(bad, index=False)
        args = ["--zeroshot-eval2", str(bad)]
        needle = "outside 0..6 in row(s) 5"
    r = run_main(*args, "--csv-img-key", "image_path", "--csv-label-key", "label", "--model",
                 f"local-dir:{tiny_openclip}", "--device", "cpu", "--logs", str(tmp_path / "l"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert needle in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "l").exists()


def test_unknown_benchmark_and_missing_label_key(tiny_openclip, tmp_path):
    r = _panderm("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--benchmark", "NOPE-9", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "unknown zero-shot benchmark 'NOPE-9'" in r.stderr and "Traceback" not in r.stderr
    r = run_main("--zeroshot-eval1", str(ZS / "pad-zero-shot-test.csv"), "--csv-img-key", "image_path",
                 "--model", f"local-dir:{tiny_openclip}", "--logs", str(tmp_path / "l"))
    assert r.returncode != 0 and "--csv-label-key is required" in r.stderr


def test_one_model_load_and_each_image_encoded_once(tiny_openclip, tmp_path):
    from panderm.models import load_encoder
    from panderm.tasks import zeroshot

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    seen = []
    original = enc._image

    def counting(x, kind):
        seen.append(x.shape[0])
        return original(x, kind)

    enc._image = counting
    datasets = [zeroshot.build_dataset(ZS / f, benchmark=get_benchmark(b), root=REPO)
                for f, b in [("pad-zero-shot-test.csv", "PAD-6"), ("HAM-official-7-zero-shot-test.csv", "HAM-7"),
                             ("ph2-2-zero-shot-test.csv", "PH2-2")]]
    kw = dict(num_workers=0, cache_dir=tmp_path, n_bootstrap=0)
    first = zeroshot.run(enc, datasets, **kw)
    dims_probe = 1 if seen and seen[0] == 1 else 0  # output_dim() probes once with a dummy image
    assert sum(seen) - dims_probe == 195 + 70 + 200
    seen.clear()
    second = zeroshot.run(enc, datasets, **kw)
    assert sum(seen) == 0  # a repeat run (e.g. a linear probe on the same images) re-encodes nothing
    for a, b in zip(first, second):
        assert np.array_equal(a.probs, b.probs) and a.metrics == b.metrics


def test_custom_templates_change_the_classifier(tiny_openclip, tmp_path):
    from panderm.data.templates import load_templates
    from panderm.models import load_encoder
    from panderm.tasks.zeroshot import class_embeddings

    enc = load_encoder(f"local-dir:{tiny_openclip}")
    path = tmp_path / "t.txt"
    path.write_text("# one template\na photo of {c}\n")
    one = class_embeddings(enc, ["melanoma", "nevus"], load_templates(path), cache=False)
    eight = class_embeddings(enc, ["melanoma", "nevus"], SKIN_TEMPLATES, cache=False)
    assert one.shape == eight.shape == (2, 32)
    assert not np.allclose(one, eight)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-6)


def test_python_api_matches_the_task(tiny_openclip):
    from panderm import PanDerm2
    from panderm.tasks.zeroshot import class_embeddings, zero_shot_probs

    model = PanDerm2.from_pretrained(f"local-dir:{tiny_openclip}")
    img = REPO / "data/sample/ph2/images/IMD003.jpg"
    names = ["benign", "malignant"]
    single = model.zero_shot_classify(str(img), names)
    assert set(single) == set(names) and sum(single.values()) == pytest.approx(1.0, abs=1e-6)
    # a file is decoded as the dataset evaluations decode it (reduced JPEG decoding by default); an in-memory
    # image is used as given: with full decoding the two are the same image
    full = PanDerm2.from_pretrained(f"local-dir:{tiny_openclip}", full_decode=True)
    many = full.zero_shot_classify([str(img), Image.open(img)], names)
    assert len(many) == 2 and many[0] == pytest.approx(many[1], abs=1e-6)
    assert model.zero_shot_classify(Image.open(img), names) == pytest.approx(many[1], abs=1e-6)
    feats = model.encode_images(str(img), normalize=False)
    probs = zero_shot_probs(feats, class_embeddings(model.encoder, names))
    assert single["malignant"] == pytest.approx(float(probs[0, 1]), abs=1e-6)


def test_same_run_twice_gives_identical_results(tiny_openclip, ham_csv, tmp_path):
    """Reproducible: same inputs + seed → byte-identical metrics and CIs in results.json (CPU)."""
    outs = []
    for name in ("a", "b"):
        r = _panderm("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--csv", str(ham_csv), "--classnames",
                     str(ham_csv.parent / "classes.csv"), "--label-col", "diag", "--out", str(tmp_path / name),
                     "--bootstrap", "100", "--no-cache")
        assert r.returncode == 0, r.stderr
        outs.append(json.loads((tmp_path / name / "results.json").read_text())["datasets"])
    assert json.dumps(outs[0], sort_keys=True) == json.dumps(outs[1], sort_keys=True)
    assert (tmp_path / "a" / "ham10000_sample" / "predictions.csv").read_bytes() == \
        (tmp_path / "b" / "ham10000_sample" / "predictions.csv").read_bytes()


def test_zero_shot_then_linear_probe_features_reencode_nothing(tiny_panderm2, tmp_path):
    """CAE towers: zero-shot needs `embed`, the reference probe `features`; one image pass serves both."""
    from panderm.features import extract_features
    from panderm.models import load_encoder
    from panderm.tasks import zeroshot

    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    enc.output_dim("features")
    seen = []
    original = enc._image
    enc._image = lambda x, kind: (seen.append((kind, x.shape[0])), original(x, kind))[1]
    ds = zeroshot.build_dataset(ZS / "pad-zero-shot-test.csv", benchmark=get_benchmark("PAD-6"), root=REPO)
    result = zeroshot.evaluate(enc, ds, num_workers=0, cache_dir=tmp_path, n_bootstrap=0)
    assert sum(n for _, n in seen) == 195 and {k for k, _ in seen} == {"features"}
    seen.clear()
    feats = extract_features(enc, ds.table.paths, "features", num_workers=0, cache_dir=tmp_path)
    assert feats.from_cache and seen == []
    # And the derived embeddings equal the tower's own forward pass.
    direct = extract_features(enc, ds.table.paths[:5], "embed", num_workers=0, cache=False, cache_dir=tmp_path)
    with torch.no_grad():
        x = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in ds.table.paths[:5]])
        np.testing.assert_allclose(direct.array, original(x, "embed").numpy(), atol=1e-5)
    assert result.probs.shape == (195, 6)


# --------------------------------------------------------------------------- reference autocast logits
def test_half_precision_logits_equal_an_independent_fp16_computation():
    """The door's logits under CUDA autocast: fp16(fp16(100·f) @ fp16(W)), softmax in float32."""
    from panderm.tasks.zeroshot import zero_shot_probs

    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 32)).astype(np.float32)
    w = rng.normal(size=(7, 32)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    got = zero_shot_probs(f, w, logits_dtype=torch.float16)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    lhs = (100.0 * fn).astype(np.float16).astype(np.float64)
    logits = (lhs @ w.astype(np.float16).astype(np.float64).T).astype(np.float16).astype(np.float64)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    exact = zero_shot_probs(f, w)
    assert np.abs(got - exact).max() > 1e-4  # the rounding is real, not a no-op


def test_reference_logits_dtype_follows_the_effective_precision():
    from panderm.tasks.zeroshot import reference_logits_dtype

    assert reference_logits_dtype(torch.device("cpu"), "amp") is None  # CPU computes in float32
    assert reference_logits_dtype(torch.device("cuda"), "amp") is torch.float16
    assert reference_logits_dtype(torch.device("cuda"), "amp_bf16") is torch.bfloat16
    assert reference_logits_dtype(torch.device("cuda"), "fp32") is None


def test_main_door_gives_monet_open_clip_default_preprocessing(tiny_hf_clip):
    """`--model monet --pretrained openai` in the reference keeps open_clip's OpenAI mean/std, not ImageNet's."""
    from panderm.compat.main_door import reference_preprocess
    from panderm.models import PreprocessSpec, load_encoder, resolve_alias

    enc = load_encoder("hf-clip:test/tiny-monet")
    assert enc.preprocess_spec.mean == (0.485, 0.456, 0.406)
    reference_preprocess("hf-clip:test/tiny-monet", enc)  # not MONET's id: only EXIF is switched off
    assert enc.preprocess_spec.mean == (0.485, 0.456, 0.406) and enc.preprocess_spec.exif_transpose is False
    for spelling in ("monet", "MONET", resolve_alias("MONET").model_id):
        enc.set_preprocess(PreprocessSpec(size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
        reference_preprocess(spelling, enc)
        assert enc.preprocess_spec == PreprocessSpec(size=32, exif_transpose=False), spelling


def test_class_names_without_images_are_named_in_one_warning(ham_csv, tmp_path, caplog):
    import logging

    from panderm.tasks.zeroshot import build_dataset

    frame = pd.read_csv(ham_csv).iloc[:6]
    frame = frame.assign(label=[0, 1, 0, 1, 0, 1])
    csv = tmp_path / "two.csv"
    frame.to_csv(csv, index=False)
    with caplog.at_level(logging.WARNING, logger="panderm"):
        build_dataset(csv, ["melanoma", "nevus", "# Source", "licence"], root=ham_csv.parent)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "2 of 4 class names have no image" in lines[0] and "# Source, licence" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="panderm"):
        build_dataset(csv, ["melanoma", "nevus"], root=ham_csv.parent)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_cli_one_benchmark_with_its_csv(tiny_openclip, tmp_path):
    """`--benchmark PAD-6 --csv FILE`: FILE is evaluated with PAD-6's class list and reference names."""
    out = tmp_path / "run"
    r = _panderm("zeroshot", "--model", f"local-dir:{tiny_openclip}", "--benchmark", "PAD-6", "--csv",
                 str(ZS / "pad-zero-shot-test.csv"), "--root", str(REPO), "--device", "cpu", "--workers", "0",
                 "--bootstrap", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert list(res["datasets"]) == ["PAD-6"]
    probs, labels = reference_probs(tiny_openclip, ZS / "pad-zero-shot-test.csv", get_benchmark("PAD-6").classnames)
    assert res["datasets"]["PAD-6"]["metrics"]["accuracy"] == pytest.approx(
        accuracy_score(labels, probs.argmax(1)), abs=1e-12)


# --------------------------------------------------------------------------- reference CPU autocast (issue 13)
def cpu_amp_reference_probs(model_dir, images, classifier, batch_size):
    """The reference's `src/main.py --precision amp` zero-shot scores on CPU, one operation at a time.

    How the numbers are obtained: open_clip_train's get_autocast(amp, device_type="cpu") wraps the reference's
    zero-shot loop in torch.autocast("cpu", dtype=float16), and its classifier is built under a CUDA-only
    autocast (float32 on CPU). Written out here without autocast, with explicit casts, for the PanDerm-2 CAE
    tower (BEiT/CAE attention, docs/REFERENCE.md, Model loading) read straight from the checkpoint:
    - CPU autocast ops run in float16 (inputs, weights and biases cast): conv2d, linear, matmul (`@`);
    - everything else keeps its input's dtype: LayerNorm of the float32 residual stream stays float32, softmax
      and GELU of float16 tensors are float16, F.normalize of the float16 embedding is float16;
    - float32 parameters combined with float16 tensors promote to float32 (cat with the CLS token, γ · x).
    Scores: normalise the float16 embedding, 100 · f @ W (an autocast matmul: float16), softmax in float16,
    per batch of `batch_size` images as the reference's loader yields them.
    """
    from safetensors.torch import load_file

    half = torch.float16
    v = {k[len("visual."):]: t for k, t in load_file(str(model_dir / "open_clip_model.safetensors")).items()
         if k.startswith("visual.")}

    def linear(x, name, bias=None):  # autocast: weights, bias and input in float16
        b = v[f"{name}.bias"] if bias is None else bias
        return F.linear(x.to(half), v[f"{name}.weight"].to(half), b.to(half))

    def layer_norm(x, name):  # not cast on CPU: float32 in, float32 out
        return F.layer_norm(x, x.shape[-1:], v[f"{name}.weight"], v[f"{name}.bias"], eps=1e-6)

    heads, depth = 2, 2
    w_half = classifier.T.contiguous().to(half)  # [D, K] as the reference builds it, cast by the autocast matmul
    out = []
    for start in range(0, len(images), batch_size):
        x = F.conv2d(images[start:start + batch_size].to(half), v["patch_embed.proj.weight"].to(half),
                     v["patch_embed.proj.bias"].to(half), stride=8).flatten(2).transpose(1, 2)  # float16
        x = torch.cat([v["cls_token"].expand(len(x), -1, -1), x], dim=1)  # promoted to float32
        x = x + v["pos_embed"]
        for i in range(depth):
            p = f"blocks.{i}"
            zero = torch.zeros_like(v[f"{p}.attn.v_bias"])
            qkv = linear(layer_norm(x, f"{p}.norm1"), f"{p}.attn.qkv",
                         bias=torch.cat([v[f"{p}.attn.q_bias"], zero, v[f"{p}.attn.v_bias"]]))
            b, n, d3 = qkv.shape
            q, k, val = qkv.reshape(b, n, 3, heads, d3 // 3 // heads).permute(2, 0, 3, 1, 4)
            q = q * (d3 // 3 // heads) ** -0.5  # float16
            attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)  # float16 matmul, float16 softmax
            o = (attn @ val).transpose(1, 2).reshape(b, n, d3 // 3)
            x = x + v[f"{p}.gamma_1"] * linear(o, f"{p}.attn.proj")  # float32 γ · float16 → float32
            h = F.gelu(linear(layer_norm(x, f"{p}.norm2"), f"{p}.mlp.fc1"))  # float16
            x = x + v[f"{p}.gamma_2"] * linear(h, f"{p}.mlp.fc2")
        x = layer_norm(x, "norm")
        emb = linear(layer_norm(x[:, 1:].mean(dim=1), "norm"), "head")  # the same LayerNorm twice, then float16
        f = F.normalize(emb, dim=-1)  # float16
        out.append(torch.softmax(100.0 * f @ w_half, dim=1))  # float16 logits, float16 softmax
    return torch.cat(out)


def test_main_py_amp_on_cpu_reproduces_the_reference_cpu_autocast(tiny_panderm2, tmp_path):
    """`src/main.py` with its default `--precision amp` on CPU equals the reference's CPU autocast run.

    Checked against `cpu_amp_reference_probs` (above; the tiny PanDerm-2 CAE tower of tests/tiny_models.py):
    every probability equal to the last float16 bit, AUROC = sklearn's roc_auc_score(one_hot, probs,
    average="macro") on them, accuracy from their argmax. Measured here: the float32 scores the door gave
    before (also `--precision fp32`) differ from these by up to ~1e-3.
    """
    from panderm.models import load_encoder

    csv = ZS / "ph2-2-zero-shot-test.csv"
    logs = tmp_path / "logs"
    common = ["--zeroshot-eval6", str(csv), "--csv-img-key", "image_path", "--csv-label-key", "label",
              "--model", f"local-dir:{tiny_panderm2}", "--device", "cpu", "--workers", "0", "--batch-size", "64",
              "--logs", str(logs), "--bootstrap", "0", "--no-cache"]
    r = run_main(*common, "--name", "amp")
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(logs / "PH2-2" / "tiny-panderm2.csv")
    line = json.loads((logs / "amp" / "checkpoints" / "results.jsonl").read_text())

    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    frame = pd.read_csv(csv)
    images = torch.stack([enc.preprocess(Image.open(REPO / p).convert("RGB")) for p in frame["image_path"]])
    with torch.no_grad():  # the classifier in float32 (10 classes, i.e. all 16 prompts, per forward)
        names = get_benchmark("PH2-2").classnames
        t = enc.encode_text(enc.tokenize([tpl.format(c=c) for c in names for tpl in SKIN_TEMPLATES]))
        t = F.normalize(t, dim=-1).reshape(len(names), len(SKIN_TEMPLATES), -1).mean(dim=1)
        classifier = F.normalize(t, dim=-1)
        ref = cpu_amp_reference_probs(tiny_panderm2, images, classifier, 64).numpy()
    ours = got[["probability_class_0", "probability_class_1"]].to_numpy()
    np.testing.assert_array_equal(ours.astype(np.float16), ref)
    # Written as float16 numbers, as the reference's pandas writes its float16 array (e.g. 0.566, not 0.56591797).
    cols = ["probability_class_0", "probability_class_1"]
    text = pd.read_csv(logs / "PH2-2" / "tiny-panderm2.csv", dtype=str)[cols]
    assert text.to_csv(index=False) == pd.DataFrame({c: ref[:, i] for i, c in enumerate(cols)}).to_csv(index=False)
    labels = frame["label"].to_numpy()
    assert (got["predicted_label"].to_numpy() == ref.argmax(1)).all()
    assert line["zeroshot-PH2-acc"] == accuracy_score(labels, ref.argmax(1))
    assert line["zeroshot-PH2-auroc"] == pytest.approx(roc_auc_score(np.eye(2)[labels], ref, average="macro"),
                                                       abs=1e-12)
    # The float32 computation (what the door gave with amp on CPU before) is measurably different.
    r32 = run_main(*common, "--name", "fp32", "--precision", "fp32")
    assert r32.returncode == 0, r32.stderr
    fp32 = pd.read_csv(logs / "PH2-2" / "tiny-panderm2.csv")[["probability_class_0", "probability_class_1"]]
    assert np.abs(fp32.to_numpy() - ref.astype(np.float64)).max() > 1e-4


def test_door_two_class_auroc_averages_both_columns_when_probabilities_tie(tiny_panderm2, tmp_path, monkeypatch):
    """The reference's two-class AUROC is roc_auc_score(one_hot, probs, average="macro"): the mean of the AUROC
    of p0 for class 0 and of p1 for class 1. Hand-made scores tied on p1 but not on p0 (each column is rounded
    on its own): p1-only gives 0.5, the reference 0.75. `panderm zeroshot` keeps the binary AUROC on p1."""
    from panderm.models import load_encoder
    from panderm.tasks import zeroshot

    frame = pd.read_csv(ZS / "ph2-2-zero-shot-test.csv").groupby("label").head(3)
    csv = tmp_path / "ph2.csv"
    frame.to_csv(csv, index=False)
    labels = frame["label"].to_numpy()
    tied = np.column_stack([np.where(labels == 0, 0.5009766, 0.5), np.full(len(labels), 0.5)]).astype(np.float16)
    assert roc_auc_score(labels, tied[:, 1]) == 0.5
    assert roc_auc_score(np.eye(2)[labels], tied, average="macro") == 0.75
    monkeypatch.setattr(zeroshot, "cpu_autocast_probs", lambda *a, **k: tied)
    enc = load_encoder(f"local-dir:{tiny_panderm2}")
    ds = zeroshot.build_dataset(csv, benchmark=get_benchmark("PH2-2"), root=REPO)
    door = zeroshot.evaluate(enc, ds, num_workers=0, cache=False, n_bootstrap=20, reference=True)
    assert door.reference_metrics()["zeroshot-PH2-auroc"] == 0.75
    assert door.ci["auroc"]["value"] == 0.75
    own = zeroshot.evaluate(enc, ds, num_workers=0, cache=False, n_bootstrap=0)  # float32, its own scores
    assert own.metrics["auroc"] == roc_auc_score(labels, own.probs[:, 1])


def test_cpu_autocast_is_the_doors_alone_and_keyed_apart(tiny_openclip):
    """Only the doors' amp / amp_bf16 on CPU change (and get their own feature-cache key); CUDA, fp32 and every
    `panderm` command keep their precision."""
    from panderm.features import cache_key, cpu_autocast, effective_precision
    from panderm.models import load_encoder

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert effective_precision(cpu, cpu_autocast("amp")) == "cpu-fp16"
    assert effective_precision(cpu, cpu_autocast("amp_bf16")) == effective_precision(cpu, cpu_autocast(
        "amp_bfloat16")) == "cpu-bf16"
    for other in ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16"):  # no autocast in the reference
        assert effective_precision(cpu, cpu_autocast(other)) == "fp32"
    assert effective_precision(gpu, cpu_autocast("amp")) == effective_precision(gpu, "amp") == "fp16"
    assert effective_precision(cpu, "amp") == "fp32"
    enc = load_encoder(f"local-dir:{tiny_openclip}")
    paths = [ZS.parent / "ph2" / "images" / "IMD003.jpg"]
    assert cache_key(enc, "embed", paths, cpu_autocast("amp")) != cache_key(enc, "embed", paths, "amp")
