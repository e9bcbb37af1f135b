"""panderm.training (the shared training kit) and panderm.runtime's training rules, against hand-computed values."""
import json
import random

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

from panderm.checkpoint_io import load_torch, save_torch
from panderm.errors import DataError, PandermError
from panderm.models.cae_vit import CAEConfig, CAEVisionTower, drop_path
from panderm.runtime import grad_scaler, training_autocast
from panderm.training import (ShardedBatchSampler, WarmupCosine, check_same_run, class_balanced_weights,
                              restore_training_state, rng_state, seed_everything, seeded_generator, set_rng_state,
                              trim_log, weighted_sampler)


# -- schedule ---------------------------------------------------------------------------------------------------
def _sched(total=10, warmup=3, base=1.0, min_lr=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    return opt, WarmupCosine(opt, base, min_lr, total_steps=total, warmup_steps=warmup)


def test_warmup_is_the_reference_linspace_from_zero_to_the_base_lr():
    _, s = _sched()
    assert [s.lr_at(i) for i in range(3)] == [0.0, 0.5, 1.0]  # np.linspace(0, 1, 3)


def test_cosine_values_after_warmup():
    _, s = _sched()  # 7 cosine steps: j = i - 3, lr = 0.1 + 0.45 (1 + cos(pi j / 7))
    assert s.lr_at(3) == pytest.approx(1.0)
    assert s.lr_at(5) == pytest.approx(0.8305704, abs=1e-7)  # cos(2 pi / 7) = 0.6234898
    assert s.lr_at(9) == pytest.approx(0.1445640, abs=1e-7)  # cos(6 pi / 7) = -0.9009689
    assert s.lr_at(50) == s.lr_at(9)  # held at the last step's value past the end


def test_apply_scales_each_group_and_the_state_round_trips():
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr_scale": 0.5}, {"params": [q]}], lr=0.0)
    s = WarmupCosine(opt, 2.0, 0.0, total_steps=4, warmup_steps=2)
    s.step()
    assert s.apply() == 2.0 and [g["lr"] for g in opt.param_groups] == [1.0, 2.0]
    s.step()
    other = WarmupCosine(opt, 2.0, 0.0, total_steps=4, warmup_steps=2)
    other.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert other.step_num == 2 and other.apply() == s.lr_at(2) == 2.0


def test_trained_by_sees_the_first_step_above_zero():
    _, s = _sched()
    assert not s.trained_by(1) and s.trained_by(2)
    _, one = _sched(total=3, warmup=1)
    assert one.lr_at(0) == 0.0 and not one.trained_by(1) and one.trained_by(2)


def test_warmup_longer_than_the_run_is_cut_to_the_run():
    _, s = _sched(total=2, warmup=5)
    assert s.warmup_steps == 2 and [s.lr_at(0), s.lr_at(1)] == [0.0, 1.0]


# -- class weights ----------------------------------------------------------------------------------------------
def test_class_weights_by_hand():
    w = class_balanced_weights([0, 0, 0, 1])  # N = 4, K = 2: 4 / (2 * 3) and 4 / (2 * 1)
    np.testing.assert_array_equal(w, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert w.dtype == np.float64
    assert w[:3].sum() == pytest.approx(w[3:].sum()) == 2.0  # each class carries N / K


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_weights_equal_sklearn_balanced_and_both_former_rules_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    k = 7
    labels = np.concatenate([np.arange(k), rng.integers(0, k, 500)])  # every class present, as finetuning checks
    ours = class_balanced_weights(labels)
    assert np.array_equal(ours, compute_sample_weight("balanced", labels))
    per_class = compute_class_weight("balanced", classes=np.arange(k), y=labels)
    assert np.array_equal(ours, per_class[labels])
    counts = np.bincount(labels, minlength=k).astype(np.float64)  # finetuning's rule (K = every class)
    assert np.array_equal(ours, (len(labels) / (k * np.maximum(counts, 1)))[labels])
    _, inv, c = np.unique(labels, return_inverse=True, return_counts=True)  # multimodal's rule (K = present)
    assert np.array_equal(ours, (labels.size / (len(c) * c))[inv].astype(np.float64))


def test_class_weights_count_only_the_classes_present():
    np.testing.assert_array_equal(class_balanced_weights(np.array([2, 2, 5])), [0.75, 0.75, 1.5])
    with pytest.raises(DataError, match="empty"):
        class_balanced_weights([])


def test_weighted_sampler_draws_n_with_replacement_from_the_generator():
    labels = np.array([0] * 90 + [1] * 10)
    s = weighted_sampler(labels, generator=seeded_generator(0))
    assert len(s) == 100 and s.replacement and s.weights.dtype == torch.float64
    draws = np.array(list(weighted_sampler(labels, num_samples=4000, generator=seeded_generator(0))))
    assert abs((draws >= 90).mean() - 0.5) < 0.05  # the rare class is drawn half the time
    assert list(weighted_sampler(labels, generator=seeded_generator(3))) == \
        list(weighted_sampler(labels, generator=seeded_generator(3)))


# -- random numbers ---------------------------------------------------------------------------------------------
def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_seeds_all_three_streams():
    seed_everything(11)
    a = _draws()
    seed_everything(11)
    assert _draws() == a
    big = 2 ** 40 + 11  # numpy takes the seed mod 2^32, Python and torch the whole seed
    random.seed(big)
    np.random.seed(11)
    torch.manual_seed(big)
    b = _draws()
    seed_everything(big)
    assert _draws() == b


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    seed_everything(4)
    _draws()
    save_torch(tmp_path / "s.pt", {"rng": rng_state()})
    expected = _draws()
    seed_everything(99)
    set_rng_state(load_torch(tmp_path / "s.pt")["rng"])
    assert _draws() == expected


def test_seeded_generator_is_reproducible_and_independent_of_the_global_stream():
    a = torch.randperm(10, generator=seeded_generator(7))
    torch.manual_seed(123)
    assert torch.equal(torch.randperm(10, generator=seeded_generator(7)), a)


# -- resume -----------------------------------------------------------------------------------------------------
def test_check_same_run():
    meta = {"n_classes": 3, "model_id": "m"}
    check_same_run(meta, "out/last.pt", 3, "m", "use another folder")
    with pytest.raises(PandermError) as err:
        check_same_run(meta, "out/last.pt", 4, "m", "use another folder")
    assert str(err.value) == "out/last.pt was written by another run (model m, K=3); use another folder"
    with pytest.raises(PandermError, match="model m, K=3"):
        check_same_run(meta, "out/last.pt", 3, "other", "x")


def test_restore_training_state_brings_back_optimiser_schedule_scaler_and_random_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    scaler = grad_scaler(torch.device("cpu"), "amp")
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    save_torch(tmp_path / "last.pt", {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                      "scaler": scaler.state_dict(), "rng": rng_state()})
    expected = _draws()
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=5)
    scaler2 = grad_scaler(torch.device("cpu"), "amp")
    seed_everything(5)
    restore_training_state(load_torch(tmp_path / "last.pt"), opt2, sched2, scaler2)
    assert _draws() == expected
    assert sched2.last_epoch == 1 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    st = opt2.state_dict()["state"][0]
    assert torch.equal(st["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_trim_log_keeps_the_epochs_the_checkpoint_holds(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"epoch": e, "loss": e / 10}) + "\n" for e in range(4)), encoding="utf-8")
    trim_log(log, 1)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [0, 1]
    before = log.stat().st_mtime_ns
    trim_log(log, 5)  # nothing to drop: the file is not rewritten
    assert log.stat().st_mtime_ns == before
    trim_log(tmp_path / "absent.jsonl", 0)


# -- batches ----------------------------------------------------------------------------------------------------
def test_sharded_batch_sampler_names_the_callers_flag():
    assert [list(ShardedBatchSampler(range(12), 6, r, 3)) for r in range(3)] == \
        [[[0, 1], [6, 7]], [[2, 3], [8, 9]], [[4, 5], [10, 11]]]
    with pytest.raises(PandermError) as err:
        ShardedBatchSampler(range(8), 5, 0, 2)
    assert str(err.value) == "batch size 5 (the global batch) must be a multiple of the 2 processes"
    assert err.value.param == "batch_size"
    assert err.value.render({"batch_size": "--batch-size"}) == \
        "batch size 5 (the global batch) must be a multiple of the 2 processes (set it with --batch-size)"


# -- runtime ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["amp", "amp_bf16", "bf16", "fp16", "fp32"])
def test_cpu_training_runs_in_float32_without_loss_scaling(precision):
    cpu = torch.device("cpu")
    with training_autocast(cpu, precision):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler(cpu, precision).is_enabled()


# -- drop path: ours, not timm's --------------------------------------------------------------------------------
def test_our_drop_path_rounds_as_the_product_then_the_division_unlike_timm():
    from timm.layers import drop_path as timm_drop_path

    x = torch.randn(256, 17, 8, generator=seeded_generator(0))
    torch.manual_seed(1)
    ours = drop_path(x, 0.1, True)
    torch.manual_seed(1)
    theirs = timm_drop_path(x, 0.1, True, True)
    torch.manual_seed(1)
    mask = x.new_empty((x.shape[0], 1, 1)).bernoulli_(0.9)
    assert torch.equal(ours, x * mask / 0.9)
    assert torch.equal(ours == 0, theirs == 0)  # the same draws ...
    assert not torch.equal(ours, theirs)  # ... rounded differently: (x * m) / keep vs x * (m / keep)
    torch.testing.assert_close(ours, theirs)


# -- the CAE tower's forward_tokens ----------------------------------------------------------------------------
def _tower():
    torch.manual_seed(0)
    t = CAEVisionTower(CAEConfig(width=32, depth=3, heads=2, patch_size=8, image_size=32, mlp_hidden=64,
                                 head_dim_out=None), pooling="cls")
    for p in t.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return t


def test_forward_tokens_defaults_are_run_blocks_and_a_zero_bias_changes_nothing():
    t = _tower().eval()
    x = torch.randn(2, 3, 32, 32)
    base = t.run_blocks(x)
    assert torch.equal(t.forward_tokens(x), base)
    n = t.n_tokens(32, 32)
    assert n == 17
    zeros = [torch.zeros(2, n, n)] * 3
    torch.testing.assert_close(t.forward_tokens(x, [0.0] * 3, zeros), base)
    with pytest.raises(ValueError, match="3 blocks"):
        t.forward_tokens(x, [0.1, 0.2])


def test_forward_tokens_applies_the_rates_and_biases_it_is_given():
    t = _tower().train()
    x = torch.randn(4, 3, 32, 32)
    rates = [0.0, 0.2, 0.4]
    biases = [torch.randn(2, 17, 17) for _ in range(3)]
    torch.manual_seed(3)
    got = t.forward_tokens(x, rates, biases)
    torch.manual_seed(3)  # the same computation spelled out on the blocks
    h = t.patch_embed(x)
    h = torch.cat([t.cls_token.expand(4, -1, -1), h], dim=1) + t.pos_embed
    for block, rate, bias in zip(t.blocks, rates, biases):
        h = h + drop_path(block.gamma_1 * block.attn(block.norm1(h), bias), rate, True)
        h = h + drop_path(block.gamma_2 * block.mlp(block.norm2(h)), rate, True)
    assert torch.equal(got, h)
    assert all(b.drop_path == 0.0 for b in t.blocks)  # the tower's own rates are left alone
    assert bool(torch.isfinite(got).all())
