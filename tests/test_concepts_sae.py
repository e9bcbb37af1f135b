"""Sparse autoencoder: forward math, loss, decoder constraint, recovery, resampling, TopK, checkpoints."""

import copy
import json

import numpy as np
import pytest
import torch

from panderm.errors import DataError, ModelError
from panderm.tasks.concepts.sae import (
    SAEConfig,
    SparseAutoencoder,
    decoder_directions,
    load_sae,
    plot_history,
    resample_dead_latents,
    sae_activations,
    sae_loss,
    sae_train_step,
    save_sae,
    topk_aux_loss,
    train_sae,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here are tiny; thread start-up dominates and on a busy 2-core runner several threads are
    # ~10x slower than one.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def planted_data(n=4000, d=16, m=32, max_active=3, seed=0):
    """x = Σ c_i·d_i with 1..max_active of m random unit directions per sample and c_i ~ U(0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(m, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for i in range(n):
        idx = rng.choice(m, size=rng.integers(1, max_active + 1), replace=False)
        codes[i, idx] = rng.uniform(0.5, 1.5, size=len(idx))
    return (codes @ dirs).astype(np.float32), dirs


@pytest.fixture(scope="module")
def planted():
    return planted_data()


def small_cfg(**kw):
    base = dict(d_in=16, expansion=4, l1=2e-2, lr=5e-3, batch_size=128, epochs=3, resample_every=0, seed=0)
    base.update(kw)
    return SAEConfig(**base)


def hand_model():
    """D=2, F=3 with known weights: b=[0.5,-1], W_e rows [1,0],[0,1],[1,1], b_e=[0,-5,0.1], W_d cols e1,e2,[.6,.8]."""
    m = SparseAutoencoder(2, 3)
    with torch.no_grad():
        m.pre_bias.copy_(torch.tensor([0.5, -1.0]))
        m.encoder.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        m.encoder.bias.copy_(torch.tensor([0.0, -5.0, 0.1]))
        m.decoder.weight.copy_(torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]))
    return m


# ---------------------------------------------------------------------------------------------- math


def test_reference_defaults():
    cfg = SAEConfig(d_in=768)
    assert (cfg.expansion, cfg.latents, cfg.l1, cfg.lr, cfg.batch_size, cfg.epochs, cfg.k) == (
        8, 6144, 3e-5, 5e-4, 4096, 200, None)
    assert cfg.init_scheme == "reference" and cfg.pre_bias_init == "zeros"


def test_forward_matches_hand_computation():
    m = hand_model()
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    x_hat, f = m(x)
    # Row 0: x−b = [0.5, 3]; z = [0.5, −2, 3.6]; f = [0.5, 0, 3.6]; x̂ = [0.5+2.16, 2.88] + b = [3.16, 1.88].
    # Row 1: x = b, so z = b_e = [0, −5, 0.1]; f = [0, 0, 0.1]; x̂ = [0.06, 0.08] + b = [0.56, −0.92].
    torch.testing.assert_close(f, torch.tensor([[0.5, 0.0, 3.6], [0.0, 0.0, 0.1]]))
    torch.testing.assert_close(x_hat, torch.tensor([[3.16, 1.88], [0.56, -0.92]]))
    torch.testing.assert_close(m.encode(x), f)
    torch.testing.assert_close(m.decode(f), x_hat)


def test_loss_by_hand():
    m = hand_model()
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    x_hat, f = m(x)
    parts = sae_loss(x, x_hat, f, l1=0.1)
    # Row 0: mse = ((1−3.16)² + (2−1.88)²)/2 = 2.34, Σ|f| = 4.1 → 2.34 + 0.41 = 2.75.
    # Row 1: mse = (0.06² + 0.08²)/2 = 0.005, Σ|f| = 0.1 → 0.015.
    assert parts["loss"].item() == pytest.approx((2.75 + 0.015) / 2, abs=1e-5)
    assert parts["mse"].item() == pytest.approx((2.34 + 0.005) / 2, abs=1e-5)
    assert parts["l1"].item() == pytest.approx((4.1 + 0.1) / 2, abs=1e-5)


def test_decoder_gradient_projection_and_unit_norm():
    X, _ = planted_data(n=256)
    cfg = small_cfg()
    model = SparseAutoencoder.from_config(cfg, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.from_numpy(X[:128])
    for _ in range(3):
        w_before = model.decoder.weight.detach().clone()
        # The raw gradient, from an untouched copy, has a real component along the columns ...
        twin = copy.deepcopy(model)
        x_hat, f = twin(x)
        sae_loss(x, x_hat, f, cfg.l1)["loss"].backward()
        raw = twin.decoder.weight.grad
        parallel = (raw * w_before).sum(dim=0)
        assert parallel.abs().max() > 1e-4
        sae_train_step(model, opt, x, cfg)
        # ... which the step removed before the optimiser saw the gradient.
        grad = model.decoder.weight.grad
        torch.testing.assert_close(grad, raw - parallel * w_before, atol=1e-6, rtol=1e-5)
        assert (grad * w_before).sum(dim=0).abs().max() < 1e-6
        torch.testing.assert_close(model.decoder.weight.norm(dim=0), torch.ones(model.n_latents))
        assert not torch.equal(model.decoder.weight, w_before)


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("k", [None, 3])
def test_recovers_planted_directions(planted, k):
    X, dirs = planted
    cfg = small_cfg(epochs=20, k=k, resample_every=5)
    model, history = train_sae(X, cfg)
    best = (dirs @ decoder_directions(model).T).max(axis=1)
    assert np.mean(best > 0.9) >= 0.8, np.round(np.sort(best), 3)
    assert history[-1]["fvu"] < 0.15
    assert history[-1]["fvu"] < history[0]["fvu"]
    if k is not None:
        assert history[-1]["l0"] <= k


def test_resampling_revives_dead_latents(planted):
    X = planted[0][:2000]
    fired = {}
    for every in (1, 0):  # with resampling, then the control without
        cfg = small_cfg(resample_every=every)
        model = SparseAutoencoder.from_config(cfg, torch.Generator().manual_seed(0))
        with torch.no_grad():
            model.encoder.bias[:16] = -1e3  # these 16 latents can never fire
        model, history = train_sae(X, cfg, model=model)
        assert history[0]["dead_fraction"] >= 16 / 64
        fired[every] = (sae_activations(model, X)[:, :16] > 0).any(axis=0)
        if every:
            assert history[0]["n_resampled"] >= 16
            assert history[-1]["n_resampled"] == 0  # never after the last epoch
            assert history[1]["dead_fraction"] < history[0]["dead_fraction"]
        else:
            assert all(r["n_resampled"] == 0 for r in history)
    assert fired[1].mean() >= 0.75
    assert not fired[0].any()


def test_resample_dead_latents_directly():
    X, _ = planted_data(n=512)
    cfg = small_cfg()
    model = SparseAutoencoder.from_config(cfg, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sae_train_step(model, opt, torch.from_numpy(X[:128]), cfg)  # fill Adam's moments
    dead = np.zeros(model.n_latents, dtype=bool)
    dead[[2, 7, 40]] = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert resample_dead_latents(model, X, dead, opt, torch.Generator().manual_seed(0)) == 3
    idx = torch.tensor([2, 7, 40])
    centred = torch.from_numpy(X) - model.pre_bias.detach()
    centred = centred / centred.norm(dim=1, keepdim=True)
    dec = model.decoder.weight.detach()[:, idx]
    # each new dictionary column is the direction of one (centred) input, and the latent fires on it
    assert ((centred @ dec).max(dim=0).values > 1 - 1e-5).all()
    assert torch.all(model.encoder.bias.detach()[idx] == 0)
    assert (sae_activations(model, X)[:, [2, 7, 40]] > 0).any(axis=0).all()
    # other latents untouched; Adam moments of the resampled ones cleared
    keep = torch.ones(model.n_latents, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(model.decoder.weight.detach()[:, keep], before["decoder.weight"][:, keep])
    for param, sl in ((model.encoder.weight, (idx,)), (model.decoder.weight, (slice(None), idx))):
        assert torch.all(opt.state[param]["exp_avg"][sl] == 0)
        assert torch.all(opt.state[param]["exp_avg_sq"][sl] == 0)
    assert opt.state[model.decoder.weight]["exp_avg"][:, keep].abs().sum() > 0


def test_topk_keeps_exactly_k_largest():
    model = SparseAutoencoder(8, 20, k=3)
    model.reset_parameters(torch.Generator().manual_seed(0), "tied")
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.encoder.bias.fill_(100.0)  # all pre-activations positive, so ReLU removes none of the top k
    f = model.encode(x)
    assert torch.all((f > 0).sum(dim=1) == 3)
    top = model.pre_activations(x).topk(3, dim=1).indices.sort(dim=1).values
    assert torch.equal(f.nonzero()[:, 1].view(50, 3), top)
    with torch.no_grad():
        model.encoder.bias.zero_()
    assert torch.all((model.encode(x) > 0).sum(dim=1) <= 3)


def test_topk_aux_loss_reaches_dead_latents():
    model = SparseAutoencoder(8, 20, k=2)
    model.reset_parameters(torch.Generator().manual_seed(0), "tied")
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    z = model.pre_activations(x)
    x_hat = model.decode(model.activate(z))
    assert topk_aux_loss(model, x, x_hat, z, None, 4).item() == 0.0
    dead = torch.zeros(20, dtype=torch.bool)
    dead[[1, 5, 9, 13]] = True
    aux = topk_aux_loss(model, x, x_hat, z, dead, 4)
    assert aux.item() > 0
    aux.backward()
    row_grad = model.encoder.weight.grad.abs().sum(dim=1)
    assert torch.all(row_grad[dead] > 0) and torch.all(row_grad[~dead] == 0)


def test_training_is_deterministic(planted):
    X = planted[0][:1000]
    cfg = small_cfg(epochs=2, resample_every=1)
    a, ha = train_sae(X, cfg)
    b, hb = train_sae(X, cfg)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(ha) == strip(hb)
    c, _ = train_sae(X, small_cfg(epochs=2, resample_every=1, seed=1))
    assert not torch.equal(a.decoder.weight, c.decoder.weight)


def test_log_and_plot(planted, tmp_path):
    X = planted[0][:500]
    log = tmp_path / "log.jsonl"
    log.write_text("stale line\n")
    _, history = train_sae(X, small_cfg(epochs=2), log_path=log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines == json.loads(json.dumps(history))
    for key in ("loss", "l0", "fvu", "dead_fraction", "dense_fraction", "n_resampled"):
        assert key in lines[0]
    png = plot_history(history, tmp_path / "history.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- I/O


def test_activations_order_dtype_and_batching(planted):
    X = planted[0][:103]
    model = SparseAutoencoder.from_config(small_cfg(), torch.Generator().manual_seed(0))
    acts = sae_activations(model, X, batch_size=10)
    assert acts.dtype == np.float32 and acts.shape == (103, 64)
    expected = model.encode(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(acts, expected, rtol=1e-6, atol=1e-6)
    perm = np.random.default_rng(0).permutation(103)
    np.testing.assert_allclose(sae_activations(model, X[perm], batch_size=7), acts[perm], rtol=1e-6, atol=1e-6)
    out = np.zeros((103, 64), dtype=np.float32)
    assert sae_activations(model, X, out=out) is out
    np.testing.assert_allclose(out, acts, rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(planted, tmp_path):
    X = planted[0][:500]
    cfg = small_cfg(epochs=1, k=4)
    model, _ = train_sae(X, cfg)
    folder = save_sae(model, cfg, tmp_path / "sae")
    assert {p.name for p in folder.iterdir()} == {"sae.safetensors", "sae_config.json"}
    for path in (folder, folder / "sae.safetensors"):
        loaded, cfg2 = load_sae(path)
        assert cfg2 == cfg and loaded.k == 4
        x = torch.from_numpy(X[:50])
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)


def reference_checkpoint(path, d=6, f=12, **changes):
    """An ``autoencoder.pth`` laid out like the reference (n_components=1: leading axis of size 1)."""
    g = torch.Generator().manual_seed(0)
    tied = torch.randn(1, d, generator=g)
    dec = torch.randn(1, d, f, generator=g)
    dec = dec / dec.norm(dim=1, keepdim=True)
    state = {
        "tied_bias": tied,
        "pre_encoder_bias._bias_reference": tied,
        "encoder._weight": torch.randn(1, f, d, generator=g),
        "encoder._bias": torch.randn(1, f, generator=g),
        "decoder._weight": dec,
        "post_decoder_bias._bias_reference": tied,
    }
    state.update(changes.pop("state", {}))
    ckpt = {
        "model_state_dict": state,
        "model_config": {"n_input_features": d, "n_learned_features": f, "n_components": 1},
        "train_shape": torch.Size([100, d]),
    }
    ckpt.update(changes)
    torch.save(ckpt, path)
    return state


def test_reads_reference_checkpoint(tmp_path):
    state = reference_checkpoint(tmp_path / "autoencoder.pth")
    model, cfg = load_sae(tmp_path / "autoencoder.pth")
    assert (cfg.d_in, cfg.latents, cfg.expansion) == (6, 12, 2)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    b, we, be, wd = (state[k][0] for k in ("tied_bias", "encoder._weight", "encoder._bias", "decoder._weight"))
    f = torch.relu((x - b) @ we.T + be)
    x_hat, codes = model(x)
    torch.testing.assert_close(codes, f)
    torch.testing.assert_close(x_hat, f @ wd.T + b)
    # and it survives our own format
    save_sae(model, cfg, tmp_path / "ours")
    again, _ = load_sae(tmp_path / "ours")
    assert torch.equal(again(x)[0], x_hat)


class NotAWeight:
    pass


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"state": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, "not a PanDerm-2"),
        ({"model_config": {"n_input_features": 6, "n_learned_features": 12, "n_components": 2}}, "components"),
        ({"state": {"encoder._bias": torch.zeros(1, 11)}}, "inconsistent SAE shapes"),
        ({"state": {"post_decoder_bias._bias_reference": torch.ones(1, 6)}}, "differs from tied_bias"),
        ({"extra": NotAWeight()}, "weights-only"),
    ],
)
def test_rejects_other_checkpoints(tmp_path, changes, message):
    reference_checkpoint(tmp_path / "autoencoder.pth", **changes)
    with pytest.raises(DataError, match=message) as info:
        load_sae(tmp_path / "autoencoder.pth")
    assert isinstance(info.value, ModelError)


def test_rejects_vit_state_dict(tmp_path):
    vit = {"patch_embed.proj.weight": torch.zeros(4, 3, 2, 2), "head.bias": torch.zeros(4)}
    torch.save(vit, tmp_path / "vit.pth")
    with pytest.raises(DataError, match="missing"):
        load_sae(tmp_path / "vit.pth")
    with pytest.raises(DataError, match="not found"):
        load_sae(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros(16, dtype=np.float32), "2-D"),
        (np.zeros((4, 15), dtype=np.float32), r"shape \(4, 15\).*16"),
        (np.array([[np.nan] * 16]), "non-finite"),
        (np.array([["a"] * 16]), "numbers"),
        (np.zeros((0, 16)), "empty"),
    ],
)
def test_bad_arrays(X, message):
    with pytest.raises(DataError, match=message):
        train_sae(X, small_cfg(epochs=1))
    model = SparseAutoencoder.from_config(small_cfg())
    with pytest.raises(DataError, match=message):
        sae_activations(model, X)


@pytest.mark.parametrize(
    "changes", [{"k": 65}, {"expansion": 0}, {"lr": 0.0}, {"pre_bias_init": "median"}, {"epochs": 1.5}]
)
def test_bad_config(changes):
    with pytest.raises(DataError):
        small_cfg(**changes).validate()
