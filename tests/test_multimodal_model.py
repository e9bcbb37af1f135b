"""Multimodal fusion model (PanDermTFormer) and its training loop / doors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from panderm.errors import PandermError
from panderm.tasks.multimodal.data import load_pad_ufes20
from panderm.tasks.multimodal.model import MHCA, FusionConfig, FusionHead
from panderm.report import write_report
from panderm.tasks.multimodal.report import MultimodalRun
from panderm.tasks.multimodal.train import METRIC_COLUMNS, MultimodalTrainer, TrainConfig

REPO = Path(__file__).resolve().parents[1]
PAD_CSV = REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"


# -- hand-built wiring --------------------------------------------------------------------

def _ln(x):
    return F.layer_norm(x, x.shape[-1:])  # fresh LayerNorms: weight 1, bias 0


def _mhca(m, x, c, heads):
    """q = Wq x; k, v = Wkv [x; c]; softmax(q k^T / sqrt(d_h)) v; + x; proj - written out by hand."""
    d = x.shape[-1]
    dh = d // heads
    wq, wkv = m.wq.weight, m.wkv.weight
    out = torch.zeros_like(x)
    tokens = torch.stack([x, c], dim=1)  # [B, 2, d]
    for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        q = x @ wq[sl].T
        k = tokens @ wkv[sl].T
        v = tokens @ wkv[d + hd * dh: d + (hd + 1) * dh].T
        a = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1) / dh ** 0.5, dim=-1)  # [B, 2]
        out[:, sl] = (a.unsqueeze(-1) * v).sum(1)
    return m.proj(out + x)


def _layer(layer, x, c, heads):
    x, c = _ln(x), _ln(c)
    x = x + _mhca(layer.attn, x, c, heads)
    return x + layer.mlp[2](F.gelu(layer.mlp[0](_ln(x))))


def test_fusion_head_matches_hand_computation():
    torch.manual_seed(0)
    h, heads, b = 4, 2, 3
    cfg = FusionConfig(num_classes=3, fusion="cross attention", meta_fusion="cross attention", att_depth=1,
                       num_head=heads, meta_att_depth=1, meta_num_head=heads, out="linear")
    head = FusionHead(cfg, hidden_dim=h, meta_feat_dim=5).eval()
    cli, der, meta = torch.randn(b, h), torch.randn(b, h), torch.randn(b, 5)
    fused = head.fuse(cli, der, meta)
    assert fused.shape == (b, 3 * h) and head(cli, der, meta).shape == (b, 3)
    # image fusion: x = L(x, c) + x, then c = L'(c, x_new) + c
    lx, lc = head.image_fusion.layers[0]
    x = _layer(lx, cli, der, heads) + cli
    c = _layer(lc, der, x, heads) + der
    # metadata: token = meta_proj(meta); x = out(L(in(x), [cli_f; der_f])) + x, where the complement is the
    # encoder outputs before image fusion (the reference's torch.cat([cli_f, der_f]), not the fused pair)
    m = head.meta_proj(meta)
    proj_in, lm, proj_out = head.meta_fusion.layers[0]
    m = proj_out(_layer(lm, proj_in(m), torch.cat([cli, der], 1), heads)) + m
    assert torch.allclose(fused, torch.cat([c, m, x], 1), atol=1e-5)  # [der_f_cli, meta_fused, cli_f_derm]


def test_mhca_residual_sits_before_the_projection():
    m = MHCA(4, 2)
    with torch.no_grad():
        m.wkv.weight.zero_()  # v = 0 -> attn·v = 0
        m.proj.weight.copy_(2 * torch.eye(4))
        m.proj.bias.zero_()
    x, c = torch.randn(2, 1, 4), torch.randn(2, 1, 4)
    assert torch.allclose(m(x, c), 2 * x)  # proj(0 + x)


@pytest.mark.parametrize("kw,width", [
    (dict(use_meta=False), 16),
    (dict(use_derm=False), 16),
    (dict(fusion="concatenate", meta_fusion="concatenate"), 24),
    # one-hot metadata keeps its MetaSubNet width (meta_proj = Identity, as the reference): 2·8 + 6
    (dict(use_meta=True, use_text_encoder=False, meta_in_dim=7, meta_dim=6, out="mlp"), 22),
])
def test_fusion_modes_shapes(kw, width):
    cfg = FusionConfig(num_classes=4, num_head=2, meta_num_head=2, att_depth=2, **kw)
    head = FusionHead(cfg, hidden_dim=8, meta_feat_dim=5).eval()
    meta = torch.randn(3, 7 if not cfg.use_text_encoder else 5)
    out = head.fuse(torch.randn(3, 8), torch.randn(3, 8) if cfg.use_derm else None, meta)
    assert out.shape == (3, width) == (3, head.final_dim)
    assert head(torch.randn(3, 8), torch.randn(3, 8) if cfg.use_derm else None, meta).shape == (3, 4)


def test_concatenate_order_is_meta_cli_derm():
    cfg = FusionConfig(num_classes=2, fusion="concatenate", meta_fusion="concatenate", num_head=1, meta_num_head=1)
    head = FusionHead(cfg, hidden_dim=2, meta_feat_dim=2)
    cli, der, meta = torch.ones(1, 2), 2 * torch.ones(1, 2), torch.zeros(1, 2)
    out = head.fuse(cli, der, meta)
    assert torch.equal(out[:, 2:], torch.tensor([[1., 1., 2., 2.]]))
    assert torch.allclose(out[:, :2], head.meta_proj(meta))


def test_bad_fusion_mode_is_one_line_error():
    with pytest.raises(PandermError, match="unknown fusion mode"):
        FusionConfig(num_classes=2, fusion="sum").check()


# -- training on the bundled PAD-UFES-20 sample -------------------------------------------

@pytest.fixture(scope="module")
def small_pad():
    t = load_pad_ufes20(PAD_CSV)
    keep = np.zeros(len(t), bool)
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        keep[np.flatnonzero(t.frame["split"].to_numpy() == split)[:n]] = True
    return t.subset(keep)


@pytest.fixture(scope="module")
def encoder(tiny_panderm2):
    from panderm.models import load_encoder

    return load_encoder(f"local-dir:{tiny_panderm2}")


def _trainer(encoder, table, out, **kw):
    fc = FusionConfig(num_classes=6, use_cli=True, use_derm=False, use_meta=True, use_text_encoder=True,
                      num_head=2, meta_num_head=2, att_depth=1, meta_att_depth=1, out="linear")
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 8, "lr": 1e-3, "bootstrap": 20, **kw})
    return MultimodalTrainer(encoder, table, fc, cfg, out)


def test_pad_training_reduces_loss_and_writes_reference_outputs(encoder, small_pad, tmp_path):
    tr = _trainer(encoder, small_pad, tmp_path, epochs=4, freeze_encoders=True, lr=3e-3)
    assert tr.datasets["train"].transform.bgr is False  # library default: RGB
    fit = tr.fit()
    losses = [r["train_loss"] for r in fit["history"]]
    assert losses[-1] < losses[0]
    test = tr.test()
    summary = write_report(MultimodalRun(tr, test, fit_result=fit), tmp_path, {"seed": 0})
    pred = pd.read_csv(tmp_path / "detailed_predictions.csv")
    assert list(pred.columns) == ["derm_filename", "cli_filename", "true_label", "predicted_label"] + \
        [f"probability_class_{k}" for k in range(6)]
    assert len(pred) == 8 and (pred["derm_filename"] == pred["cli_filename"]).all()  # clinical in both slots
    assert list(pd.read_csv(tmp_path / "evaluation_metrics.csv").columns) == list(METRIC_COLUMNS)
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert {"best.pt", "last.pt", "log.jsonl", "results.json"} <= {p.name for p in tmp_path.iterdir()}
    # the door's results.json layout: provenance where it always was, before best_epoch
    assert list(summary)[-3:] == ["provenance", "best_epoch", "best_val_metric"] and summary["provenance"] == {"seed": 0}
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == pytest.approx(test["metrics"])


def test_kill_and_resume_is_bit_identical(encoder, small_pad, tmp_path):
    kw = dict(max_steps=2, accum_freq=2, batch_size=4)
    a = _trainer(encoder, small_pad, tmp_path / "a", **kw)
    a.fit()
    b = _trainer(encoder, small_pad, tmp_path / "b", stop_after_epoch=0, **kw)
    assert "stopped_after_epoch" in b.fit()
    c = _trainer(encoder, small_pad, tmp_path / "b", **kw)  # a fresh process would rebuild like this
    c.fit(resume=True)
    sa, sc = a.model.state_dict(), c.model.state_dict()
    assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa)


# -- doors --------------------------------------------------------------------------------

def test_door_train_and_test_smoke(tiny_panderm2, tmp_path):
    raw = pd.read_csv(PAD_CSV)
    raw = pd.concat([raw[raw["split"] == s].head(n) for s, n in (("train", 12), ("val", 6), ("test", 6))])
    raw["image_path"] = [str(PAD_CSV.parent / p) for p in raw["image_path"]]
    csv = tmp_path / "pad_small.csv"
    raw.to_csv(csv, index=False)
    out = tmp_path / "run"
    common = ["--model_name", f"local-dir:{tiny_panderm2}", "--dataset", "pad", "--data_path", str(csv),
              "--class_num", "6", "--allow_absolute_paths", "--use_cli", "--use_meta", "--use_text_encoder", "--hidden_dim", "64",
              "--num_head", "2", "--meta_num_head", "2", "--att_depth", "1", "--meta_att_depth", "1",
              "--fusion", "cross attention", "--meta_fusion_mode", "cross attention", "--out", "linear",
              "--batch_size", "8", "--output_dir", str(out), "--freeze_encoders", "--bootstrap", "0"]
    r = subprocess.run([sys.executable, str(REPO / "multimodal_finetune" / "train.py"), *common, "--epochs", "1",
                        "--learning_rate", "1e-3"], capture_output=True, text=True, timeout=1200)  # hang guard only
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "best.pt", "last.pt", "log.jsonl", "results.json", "detailed_predictions.csv", "evaluation_metrics.csv",
        "confusion_matrix.png"])
    t_out = tmp_path / "test"
    r = subprocess.run([sys.executable, str(REPO / "multimodal_finetune" / "test.py"), *common[:-5],
                        "--output_dir", str(t_out), "--freeze_encoders", "--model_path", str(out / "best.pt")],
                       capture_output=True, text=True, timeout=1200)  # hang guard only
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in t_out.iterdir()) == ["detailed_predictions.csv"]
    assert "Accuracy" in r.stdout


def test_door_bad_input_is_one_line(tmp_path, capsys):
    """In-process, so no wall-clock limit (tests/test_bad_input_matrix.py runs doors as real processes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mm_train_door", REPO / "multimodal_finetune" / "train.py")
    door = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(door)
    rc = door.main(["--dataset", "pad", "--data_path", str(tmp_path / "missing.csv"),
                    "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "missing.csv" in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_door_defaults_to_reference_bgr_and_panderm_to_rgb():
    import argparse

    from panderm.cli import add_model_args
    from panderm.cli.multimodal import register
    from panderm.compat.multimodal_door import reference_parser

    assert reference_parser("train").parse_args([]).bgr is True
    assert reference_parser("train").parse_args(["--rgb"]).bgr is False
    p = argparse.ArgumentParser()
    register(p.add_subparsers(), add_model_args)
    assert p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x.csv"]).bgr is False
    assert p.parse_args(["multimodal", "train", "--model", "demo", "--data-path", "x.csv", "--bgr"]).unpaired is False
