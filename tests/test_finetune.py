"""Full finetuning (PanDerm v1 recipe) on the tiny 32-px PanDerm v1 tower, CPU only."""
import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from panderm.errors import DataError, ModelError
from panderm.models import load_encoder
from panderm.tasks import finetune as ft
from panderm.cli import finetune as finetune_cli
from panderm.tasks.linear_probe.pipeline import load_splits

N_CLASSES = 4


pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    """16 train / 8 val / 8 test small PNGs, 4 classes (class-tinted noise)."""
    root = tmp_path_factory.mktemp("ft-data")
    rng = np.random.default_rng(0)
    tints = rng.integers(0, 255, size=(N_CLASSES, 3))
    rows = []
    for split, per_class in (("train", 4), ("val", 2), ("test", 2)):
        for c in range(N_CLASSES):
            for i in range(per_class):
                arr = np.clip(tints[c] + rng.normal(0, 60, size=(40, 44, 3)), 0, 255).astype(np.uint8)
                name = f"img/{split}_{c}_{i}.png"
                (root / "img").mkdir(exist_ok=True)
                Image.fromarray(arr).save(root / name)
                rows.append({"image_path": name, "label": c, "split": split})
    csv = root / "data.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def _encoder(path):
    return load_encoder("panderm-v1-base", checkpoint=str(path))


def _cfg(**kw):
    base = dict(epochs=4, batch_size=8, warmup_epochs=1, bootstrap=0, seed=3)
    base.update(kw)
    return ft.FinetuneConfig(**base)


def test_image_size_defaults_to_the_tower(tiny_panderm_v1):
    assert ft.default_image_size(_encoder(tiny_panderm_v1)) == 32


def test_overfits_16_images(tiny_panderm_v1, tiny_csv, tmp_path):
    splits = load_splits(tiny_csv)
    del splits.tables["val"]  # no val split: best.pt is the last epoch
    cfg = _cfg(epochs=16, batch_size=16, lr=1e-2, warmup_epochs=0, layer_decay=0.9, weight_decay=0.0,
               drop_path=0.0, mixup=0.0, cutmix=0.0, smoothing=0.0, augment=False)
    tuner = ft.Finetuner(_encoder(tiny_panderm_v1), splits, cfg, tmp_path)
    result = tuner.fit()
    losses = [s for rec in result["history"] for s in rec["step_losses"]]
    assert len(losses) == 16  # one full batch of the 16 train images per epoch
    assert losses[-1] < 0.1 * losses[0], losses


def test_killed_run_resumes_to_identical_weights(tiny_panderm_v1, tiny_csv, tmp_path):
    # Mixup/CutMix (numpy RNG), augmentation + drop path (torch RNG), weighted sampler (loader generator).
    cfg = dict(epochs=3, batch_size=8, weighted_sampler=True, drop_path=0.2)
    splits = load_splits(tiny_csv)
    full = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(**cfg), tmp_path / "full")
    full.fit()

    def kill(epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(**cfg), part, on_epoch_end=kill).fit()
    assert torch.load(part / "last.pt", weights_only=False)["epoch"] == 0
    # A kill right after logging epoch 1 but before its checkpoint: the stale line must not survive the resume.
    with open(part / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 1, "step_losses": [123.0]}) + "\n")
    # ... and one after last.pt recorded epoch 0 as the best but before the staged best.pt was moved in place.
    assert torch.load(part / "last.pt", weights_only=False)["best_epoch"] == 0
    (part / "best.pt").rename(part / ft.BEST_STAGED)
    resumed = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(**cfg), part)
    assert resumed.fit(resume=True)["history"][0]["epoch"] == 1

    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(part / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    log_a, log_b = ft.read_log(tmp_path / "full"), ft.read_log(part)
    assert [r["step_losses"] for r in log_a] == [r["step_losses"] for r in log_b]
    assert [r["epoch"] for r in log_b] == [0, 1, 2]
    assert not (part / ft.BEST_STAGED).exists()
    best_a = torch.load(tmp_path / "full" / "best.pt", weights_only=False)
    best_b = torch.load(part / "best.pt", weights_only=False)
    assert best_a["epoch"] == best_b["epoch"]
    for key in best_a["model"]:
        assert torch.equal(best_a["model"][key], best_b["model"][key]), key
    # the weights did move
    first = torch.load(tmp_path / "full" / "best.pt", weights_only=False)
    assert first["meta"]["n_classes"] == N_CLASSES


def test_layer_decay_groups_for_a_two_block_tower(tiny_panderm_v1, tiny_csv, tmp_path):
    splits = load_splits(tiny_csv)
    tuner = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(), tmp_path)
    ids, depth = ft.layer_ids(tuner.model)
    assert depth == 2
    groups = ft.param_groups(tuner.model, 0.05, 0.65)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert scale["encoder.tower.patch_embed.proj.weight"] == pytest.approx(0.65 ** 3)
    assert scale["encoder.tower.cls_token"] == pytest.approx(0.65 ** 3)
    assert scale["encoder.tower.blocks.0.attn.qkv.weight"] == pytest.approx(0.65 ** 2)
    assert scale["encoder.tower.blocks.1.mlp.fc2.weight"] == pytest.approx(0.65)
    assert scale["fc_norm.weight"] == scale["head.weight"] == 1.0
    # no weight decay on 1-D params, biases, cls_token; pos_embed (fixed) and the unused final norm are frozen
    assert wd["head.weight"] == wd["encoder.tower.blocks.0.attn.qkv.weight"] == 0.05
    assert wd["head.bias"] == wd["encoder.tower.cls_token"] == wd["encoder.tower.blocks.0.gamma_1"] == 0.0
    assert "encoder.tower.pos_embed" not in scale and "encoder.tower.norm.weight" not in scale
    # the schedule: linear warmup from 0, then cosine down to min_lr, lr scaled per group
    opt = torch.optim.AdamW(groups, lr=1.0)
    sched = ft.WarmupCosine(opt, 5e-4, 1e-6, total_steps=20, warmup_steps=5)
    assert sched.apply() == 0.0
    sched.step_num = 4
    assert sched.apply() == pytest.approx(5e-4)
    assert {round(g["lr"] / 5e-4, 6) for g in opt.param_groups} == {round(0.65 ** k, 6) for k in range(4)}
    sched.step_num = 19
    assert sched.apply() < 1e-5


def test_v1_pooling_fc_norm_from_final_norm(tiny_panderm_v1, tiny_csv, tmp_path):
    enc = _encoder(tiny_panderm_v1)
    tuner = ft.Finetuner(enc, load_splits(tiny_csv), _cfg(), tmp_path)
    model = tuner.model.eval()
    assert model.mean_pool and model.fc_norm is not enc.tower.norm
    assert torch.equal(model.fc_norm.weight, enc.tower.norm.weight)
    assert torch.equal(model.fc_norm.bias, enc.tower.norm.bias)
    assert model.drop_path_rates == pytest.approx([0.0, 0.2])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = enc.tower.run_blocks(x)
        assert torch.equal(model._cae_tokens(x), tokens)  # eval mode: exactly the tower's blocks
        expected = model.head(enc.tower.norm(tokens[:, 1:].mean(dim=1)))
        assert torch.allclose(model(x), expected, atol=1e-6)


def _parser():
    from panderm.cli import add_model_args

    parser = argparse.ArgumentParser()
    finetune_cli.register(parser.add_subparsers(), add_model_args)
    return parser


def _cli(*argv):
    args = _parser().parse_args(["finetune", *map(str, argv)])
    args.func(args)


def test_eval_on_saved_checkpoint_reproduces_test_metrics(tiny_panderm_v1, tiny_csv, tmp_path, capsys):
    common = ["--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", tiny_csv, "--device", "cpu",
              "--workers", 0, "--bootstrap", 0, "--seed", 1]
    _cli(*common, "--epochs", 2, "--batch-size", 8, "--warmup-epochs", 1, "--out", tmp_path / "run")
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert (run / "predictions" / "test.csv").is_file() and (run / "confusion_matrix_test.png").is_file()
    assert len(ft.read_log(run)) == 2 and results["pooling"].startswith("mean patch tokens")
    _cli(*common, "--eval", run / "best.pt", "--out", tmp_path / "eval")
    again = json.loads((tmp_path / "eval" / "results_eval.json").read_text())
    assert again["checkpoint_epoch"] == results["checkpoint_epoch"]
    for name, value in results["metrics"].items():
        assert again["metrics"][name] == pytest.approx(value, nan_ok=True), name
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions" / "test.csv"),
                                  pd.read_csv(tmp_path / "eval" / "predictions" / "eval.csv"))
    # 5-view TTA is seeded: two evaluations agree
    _cli(*common, "--eval", run / "best.pt", "--tta", "--out", tmp_path / "tta1")
    _cli(*common, "--eval", run / "best.pt", "--tta", "--out", tmp_path / "tta2")
    t1, t2 = (pd.read_csv(tmp_path / d / "predictions" / "eval.csv") for d in ("tta1", "tta2"))
    pd.testing.assert_frame_equal(t1, t2)
    assert json.loads((tmp_path / "tta1" / "results_eval.json").read_text())["tta"] is True


def test_bad_input_is_a_data_error(tiny_panderm_v1, tiny_csv, tmp_path):
    frame = pd.read_csv(tiny_csv)
    no_split = tmp_path / "nosplit.csv"
    frame.drop(columns=["split"]).to_csv(no_split, index=False)
    (tmp_path / "img").symlink_to(tiny_csv.parent / "img")
    with pytest.raises(DataError, match="split"):
        _cli("--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", no_split, "--out", tmp_path / "o")
    missing = tmp_path / "missing.csv"
    frame[~((frame["split"] == "train") & (frame["label"] == 3))].to_csv(missing, index=False)
    with pytest.raises(DataError, match=r"\[3\].*not in train"):
        _cli("--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", missing, "--out", tmp_path / "o")
    assert not (tmp_path / "o").exists()  # data is validated before the run folder is claimed


def test_generic_backbone_fallback_timm_vit():
    import timm

    from panderm.models.base import PreprocessSpec
    from panderm.models.vision_only import TimmEncoder

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, depth=3)
    enc = TimmEncoder(vit.eval(), "timm:tiny", PreprocessSpec(size=32), True, None)
    model = ft.FinetuneModel(enc, 3, drop_path=0.2, image_size=32)
    assert model.drop_path_applied and not model.mean_pool
    assert [type(b.drop_path1).__name__ for b in vit.blocks] == ["Identity", "DropPath", "DropPath"]
    assert ft.freeze_unused(model, 32) == []
    ids, depth = ft.layer_ids(model)
    assert depth == 3
    assert ids["encoder.model.patch_embed.proj.weight"] == ids["encoder.model.cls_token"] == 0
    assert ids["encoder.model.blocks.2.attn.qkv.weight"] == 3
    assert ids["encoder.model.norm.weight"] == ids["head.weight"] == 4
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_relative_position_index_matches_an_enumeration_of_offsets():
    """Every patch pair maps to the row of its (dy, dx) offset; CLS rows/columns get the three extra rows."""
    gh, gw = 2, 3
    index = ft.relative_position_index(gh, gw)
    n_offsets = (2 * gh - 1) * (2 * gw - 1)
    pos = [(y, x) for y in range(gh) for x in range(gw)]
    offsets = sorted({(a[0] - b[0], a[1] - b[1]) for a in pos for b in pos})
    assert len(offsets) == n_offsets
    row_of = {o: i for i, o in enumerate(offsets)}  # lexicographic (dy, dx) order = the table's row order
    for i, a in enumerate(pos):
        for j, b in enumerate(pos):
            assert index[i + 1, j + 1] == row_of[(a[0] - b[0], a[1] - b[1])]
    assert index[0, 1:].tolist() == [n_offsets] * 6 and index[1:, 0].tolist() == [n_offsets + 1] * 6
    assert index[0, 0] == n_offsets + 2


def test_rel_pos_bias_tables_start_at_zero_and_enter_the_attention_logits(tiny_panderm_v1, tiny_csv, tmp_path):
    enc = _encoder(tiny_panderm_v1)
    model = ft.Finetuner(enc, load_splits(tiny_csv), _cfg(), tmp_path).model.eval()
    tables = [b.attn.relative_position_bias_table for b in enc.tower.blocks]
    assert model.rel_pos_bias and all(t.shape == ((2 * 4 - 1) ** 2 + 3, b.attn.heads) and not t.any()
                                      for t, b in zip(tables, enc.tower.blocks))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model._cae_tokens(x), enc.tower.run_blocks(x), atol=1e-5, rtol=0)
        # A non-zero table: the block's attention equals softmax(QKᵀ/√d + B) V written out by hand.
        g = torch.Generator().manual_seed(0)
        tables[0].copy_(torch.randn(tables[0].shape, generator=g))
        block = enc.tower.blocks[0]
        h = block.norm1(torch.randn(2, 17, block.attn.qkv.in_features, generator=g))
        bias = model._score_bias(block, 17)
        b, n, d = h.shape
        qkv = torch.nn.functional.linear(h, block.attn.qkv.weight, torch.cat(
            [block.attn.q_bias, torch.zeros_like(block.attn.v_bias), block.attn.v_bias]))
        q, k, v = qkv.reshape(b, n, 3, block.attn.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        for hd in range(block.attn.heads):
            for i in range(n):
                for j in range(n):
                    assert bias[hd, i, j] == tables[0][model.rel_pos_index[i, j], hd]
        manual = block.attn.proj((torch.softmax(scores + bias, -1) @ v).transpose(1, 2).reshape(b, n, d))
        torch.testing.assert_close(block.attn(h, bias), manual, atol=1e-5, rtol=1e-5)
    enc.tower.dynamic_size = True  # a tower that takes other sizes: the table still fits one grid only
    with pytest.raises(ModelError, match="built for a 4x4 patch grid, got 36 patches"):
        model(torch.randn(1, 3, 48, 48))


def test_cae_tokens_go_through_the_towers_forward_tokens_unchanged(tiny_panderm_v1, tiny_csv, tmp_path):
    """Train mode, drop path and non-zero bias tables: the wrapper's tokens equal, bit for bit, the block loop it
    used to run on the tower's internals (patch embed, CLS, position embedding, biased attention, drop path)."""
    from panderm.models.cae_vit import drop_path

    enc = _encoder(tiny_panderm_v1)
    model = ft.Finetuner(enc, load_splits(tiny_csv), _cfg(drop_path=0.3), tmp_path).model.train()
    tower = enc.tower
    with torch.no_grad():
        for b in tower.blocks:
            b.attn.relative_position_bias_table.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(7)
    got = model._cae_tokens(x)
    torch.manual_seed(7)
    h = tower.patch_embed(x)
    h = torch.cat([tower.cls_token.expand(4, -1, -1), h], dim=1) + tower._pos_embed_for(4, 4).to(h.dtype)
    for block, rate in zip(tower.blocks, model.drop_path_rates):
        bias = model._score_bias(block, h.shape[1])
        h = h + drop_path(block.gamma_1 * block.attn(block.norm1(h), bias), rate, True)
        h = h + drop_path(block.gamma_2 * block.mlp(block.norm2(h)), rate, True)
    assert model.drop_path_rates == pytest.approx([0.0, 0.3])
    assert torch.equal(got, h)


def test_rel_pos_bias_tables_train_in_their_blocks_layer(tiny_panderm_v1, tiny_csv, tmp_path):
    tuner = ft.Finetuner(_encoder(tiny_panderm_v1), load_splits(tiny_csv), _cfg(), tmp_path)
    groups = ft.param_groups(tuner.model, 0.05, 0.65)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    name = "encoder.tower.blocks.{}.attn.relative_position_bias_table"
    assert scale[name.format(0)] == pytest.approx(0.65 ** 2) and scale[name.format(1)] == pytest.approx(0.65)
    assert wd[name.format(0)] == 0.05  # a 2-D parameter: decayed like the other matrices
    tuner.model.train()
    tuner.model(torch.randn(2, 3, 32, 32)).sum().backward()
    table = dict(tuner.model.named_parameters())[name.format(1)]
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_disable_rel_pos_bias(tiny_panderm_v1, tiny_csv, tmp_path):
    enc = _encoder(tiny_panderm_v1)
    model = ft.Finetuner(enc, load_splits(tiny_csv), _cfg(rel_pos_bias=False), tmp_path).model
    assert not model.rel_pos_bias
    assert not any("relative_position" in n for n, _ in model.named_parameters())


def test_sharded_batch_sampler_splits_each_global_batch_into_equal_contiguous_shares():
    order = list(range(10))
    shares = [list(ft.ShardedBatchSampler(order, 4, r, 2)) for r in range(2)]
    assert shares[0] == [[0, 1], [4, 5]] and shares[1] == [[2, 3], [6, 7]]  # 8, 9: the dropped last batch
    assert len(ft.ShardedBatchSampler(order, 4, 0, 2)) == 2
    with pytest.raises(ft.PandermError, match="multiple of the 3 processes"):
        ft.ShardedBatchSampler(order, 8, 0, 3)


@pytest.mark.slow
def test_torchrun_two_processes_train_like_one(tiny_panderm_v1, tiny_csv, tmp_path):
    """2 gloo ranks, global batch 8 split 4 + 4, DDP-averaged gradients: the same weights and test predictions as
    one process with batch 8 (no random draws that differ per rank: no mixup, drop path or augmentation);
    checkpoints and the log written once."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Loopback for gloo: resolving the host name can pick an interface the ranks cannot reach each other on.
    # TMPDIR: torchrun's torchelastic_* folders land in the test's folder, not in /tmp.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "TMPDIR": str(tmp_path)}
    common = ["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv", str(tiny_csv),
              "--epochs", "3", "--batch-size", "8", "--warmup-epochs", "1", "--lr", "5e-3", "--drop-path", "0",
              "--mixup", "0", "--cutmix", "0", "--no-augment", "--bootstrap", "0", "--workers", "0",
              "--device", "cpu", "--seed", "3"]
    one = subprocess.run([sys.executable, "-m", "panderm", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(port), "-m", "panderm", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr
    a = ft.load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    b = ft.load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    start = _encoder(tiny_panderm_v1).tower.state_dict()
    assert a.keys() == b.keys()
    assert not torch.allclose(a["encoder.tower.blocks.1.mlp.fc2.weight"], start["blocks.1.mlp.fc2.weight"])
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    log_one = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert len(log_two) == 3 and [r["steps"] for r in log_two] == [r["steps"] for r in log_one] == [2, 2, 2]
    np.testing.assert_allclose([s for r in log_two for s in r["step_losses"]],
                               [s for r in log_one for s in r["step_losses"]], rtol=1e-4)
    p1 = pd.read_csv(tmp_path / "one" / "predictions" / "test.csv")
    p2 = pd.read_csv(tmp_path / "two" / "predictions" / "test.csv")
    assert len(p2) == 8 and p2["image_path"].tolist() == p1["image_path"].tolist()  # every test image once, in order
    np.testing.assert_allclose(p2.filter(like="prob_").to_numpy(), p1.filter(like="prob_").to_numpy(),
                               atol=1e-5)
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["provenance"]["world_size"] == 2


def test_failure_after_a_checkpoint_keeps_the_run_folder_and_resume_continues(tiny_panderm_v1, tiny_csv, tmp_path,
                                                                                 monkeypatch, capsys):
    """A NaN loss in epoch 1 is a one-line error, but epoch 0's checkpoint and log stay for --resume; a failure
    before any checkpoint still leaves nothing behind."""
    from panderm.cli import main

    out = tmp_path / "run"
    argv = ["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv", str(tiny_csv),
            "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "0", "--bootstrap", "0", "--workers", "0",
            "--device", "cpu", "--out", str(out)]
    real_loss, calls = ft.Finetuner._loss, []

    def nan_in_epoch_1(self, logits, y_soft, y):
        calls.append(1)
        loss = real_loss(self, logits, y_soft, y)
        return loss * float("nan") if len(calls) > 2 else loss  # 2 steps per epoch

    monkeypatch.setattr(ft.Finetuner, "_loss", nan_in_epoch_1)
    assert main(argv) == 2
    assert "loss is nan at epoch 1" in capsys.readouterr().err
    assert ft.load_checkpoint(out / "last.pt")["epoch"] == 0 and len(ft.read_log(out)) == 1
    monkeypatch.setattr(ft.Finetuner, "_loss", real_loss)
    assert main(argv + ["--resume"]) == 0
    assert [r["epoch"] for r in ft.read_log(out)] == [0, 1] and (out / "results.json").is_file()

    early = tmp_path / "early"
    calls.clear()
    monkeypatch.setattr(ft.Finetuner, "_loss", lambda self, *a: real_loss(self, *a) * float("nan"))
    assert main(argv[:-1] + [str(early)]) == 2
    assert not early.exists()


def test_resume_on_a_folder_killed_before_its_first_checkpoint_starts_afresh(tiny_panderm_v1, tiny_csv, tmp_path):
    from panderm.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"epoch": 0, "step_losses": [9.0]}\n')  # logged, then killed before last.pt
    argv = ["finetune", "--model", "panderm-v1-base", "--checkpoint", str(tiny_panderm_v1), "--csv", str(tiny_csv),
            "--epochs", "1", "--batch-size", "8", "--warmup-epochs", "0", "--bootstrap", "0", "--workers", "0",
            "--device", "cpu", "--out", str(out), "--resume"]
    assert main(argv) == 0
    assert [r["step_losses"] != [9.0] for r in ft.read_log(out)] == [True]


def test_a_staged_best_that_last_pt_never_recorded_is_dropped(tiny_panderm_v1, tiny_csv, tmp_path):
    splits = load_splits(tiny_csv)
    out = tmp_path / "run"
    ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=2, stop_after_epoch=0), out).fit()
    last = torch.load(out / "last.pt", weights_only=False)
    ft.save_checkpoint(out / ft.BEST_STAGED, {"model": last["model"], "epoch": 1, "best_metric": 9.0, "meta": {}})
    before = torch.load(out / "best.pt", weights_only=False)["epoch"]
    tuner = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=2), out)
    tuner._settle_best(last["best_epoch"])
    assert not (out / ft.BEST_STAGED).exists()
    assert torch.load(out / "best.pt", weights_only=False)["epoch"] == before == last["best_epoch"]


def test_checkpoint_without_rel_pos_bias_names_the_flag(tiny_panderm_v1, tiny_csv, tmp_path):
    splits = load_splits(tiny_csv)
    plain = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=1, rel_pos_bias=False), tmp_path / "a")
    plain.fit()
    with_bias = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=1), tmp_path / "b")
    with pytest.raises(ModelError, match="trained without the relative position bias") as info:
        with_bias.test(tmp_path / "a" / "best.pt")
    assert info.value.render({"disable_rel_pos_bias": "--disable-rel-pos-bias"}).endswith(
        "trained without the relative position bias (set it with --disable-rel-pos-bias)")
    with_bias.fit()
    with pytest.raises(ModelError, match="trained with the relative position bias") as info:
        ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=1, rel_pos_bias=False),
                     tmp_path / "c").test(tmp_path / "b" / "best.pt")
    assert info.value.render({"disable_rel_pos_bias": "--disable-rel-pos-bias"}).endswith(
        "trained with the relative position bias (drop --disable-rel-pos-bias)")


def test_text_labels_with_classnames(tiny_panderm_v1, tiny_csv, tmp_path):
    """String labels need --classnames; the names map to indices in the given order and label the outputs."""
    names = ["mel", "nv", "bcc", "df"]
    frame = pd.read_csv(tiny_csv)
    text = tmp_path / "text.csv"
    frame.assign(dx=[names[k] for k in frame["label"]]).to_csv(text, index=False)
    (tmp_path / "img").symlink_to(tiny_csv.parent / "img")
    common = ["--model", "panderm-v1-base", "--checkpoint", tiny_panderm_v1, "--csv", text, "--label-col", "dx",
              "--device", "cpu", "--workers", 0, "--bootstrap", 0, "--epochs", 1, "--warmup-epochs", 0,
              "--batch-size", 8, "--max-steps", 1]
    with pytest.raises(DataError, match="give the class names") as err:
        _cli(*common, "--out", tmp_path / "none")
    assert err.value.param == "classnames"  # `panderm finetune` spells it --classnames (tests/test_error_params.py)
    _cli(*common, "--classnames", ",".join(names), "--out", tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["classnames"] == names and results["n_classes"] == 4
    preds = pd.read_csv(tmp_path / "run" / "predictions" / "test.csv")
    assert preds["label"].tolist() == frame.loc[frame["split"] == "test", "label"].tolist()
    # A listed class with no train rows cannot be learned.
    with pytest.raises(DataError, match=r"\['extra'\].*no train rows"):
        _cli(*common, "--classnames", ",".join(names + ["extra"]), "--out", tmp_path / "extra")


def test_an_epoch_that_has_not_trained_is_never_the_best(tiny_panderm_v1, tiny_csv, tmp_path, monkeypatch, caplog):
    """Warm-up starts at lr 0: with one step per epoch and one warm-up epoch, epoch 0 trains nothing. Even when
    its (untrained) head scores best on val, the checkpoint kept is a trained one (issue 18)."""
    splits = load_splits(tiny_csv)
    scores = iter([0.9, 0.5, 0.6])  # the untrained epoch 0 "wins" under the reference's strict-improvement rule

    def fake_metrics(labels, probs):
        return {"accuracy": next(scores)}

    monkeypatch.setattr(ft.trainer, "_metrics", fake_metrics)  # the module whose Finetuner.fit reads it
    out = tmp_path / "run"
    tuner = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=3, warmup_epochs=1, max_steps=1), out)
    init = {k: v.clone() for k, v in tuner.model.state_dict().items()}
    res = tuner.fit()
    assert [r["lr"] for r in res["history"]][0] == 0.0
    assert [r["trained"] for r in res["history"]] == [False, True, True]
    # epoch 1 replaces the untrained placeholder whatever its score; epoch 2 then improves on it strictly
    assert res["best_epoch"] == 2 and res["best_metric"] == 0.6
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["epoch"] == 2
    assert any(not torch.equal(best["model"][k], init[k]) for k in init)

    scores = iter([0.9, 0.5])
    res = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=2, warmup_epochs=1, max_steps=1),
                       tmp_path / "run2").fit()
    assert res["best_epoch"] == 1 and res["best_metric"] == 0.5


def test_a_run_that_never_trains_says_so(tiny_panderm_v1, tiny_csv, tmp_path, caplog):
    splits = load_splits(tiny_csv)
    with caplog.at_level("WARNING", logger="panderm.tasks.finetune"):
        res = ft.Finetuner(_encoder(tiny_panderm_v1), splits, _cfg(epochs=1, warmup_epochs=1, max_steps=1),
                           tmp_path / "run").fit()
    assert res["best_epoch"] == 0 and res["history"][0]["trained"] is False
    assert (tmp_path / "run" / "best.pt").is_file()
    assert any("no epoch trained" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("min_lr", -1.0), ("weight_decay", -0.1), ("monitor", "loss2"), ("normalize", "zscore"),
    ("epochs", 0), ("batch_size", 0), ("warmup_epochs", -1), ("layer_decay", 1.5), ("drop_path", 1.0)])
def test_bad_settings_name_the_setting_and_the_cli_names_its_flag(field, value):
    """FinetuneConfig names the setting (`param`); `panderm finetune` names its flag, and every flag it names is
    one its parser has."""
    import dataclasses

    from panderm.cli import build_parser, command_flags
    from panderm.tasks.finetune.config import FinetuneConfig

    with pytest.raises(ft.PandermError) as err:
        dataclasses.replace(FinetuneConfig(), **{field: value}).check()
    assert err.value.param == field and "--" not in str(err.value) and str(value) in str(err.value)
    flag = "--" + field.replace("_", "-")
    assert err.value.render(command_flags("finetune")).endswith(f"(set it with {flag})")
    parser = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert flag in {o for a in parser.choices["finetune"]._actions for o in a.option_strings}
