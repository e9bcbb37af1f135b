"""Sparse autoencoder: forward math, loss, decoder constraint, recovery, resampling, TopK, checkpoints."""

import copy
import json
from pathlib import Path

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
    assert cfg.init_scheme == "reference"
    # The recipe of the reference's SAE library (Anthropic's), which the reference itself never ran.
    assert (cfg.pre_bias_init, cfg.resample_every, cfg.max_resamples) == ("geometric_median", 10, 4)


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


# ---------------------------------------------------------------------------------------------- the default recipe

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CSVS = [REPO / "data" / "sample" / "ph2" / "ph2.csv",
               REPO / "data" / "sample" / "ham10000_sample" / "ham10000_sample.csv",
               REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv"]


@pytest.fixture(scope="module")
def sample_embeddings(tmp_path_factory):
    """L2-normalised `demo`-model embeddings of every bundled sample image ([465, 64]), as `panderm features`
    writes them; like real embeddings they share a large common component (‖mean‖ ≈ 0.98)."""
    from panderm.cli import main

    tmp = tmp_path_factory.mktemp("sample_emb")
    parts = []
    for csv in SAMPLE_CSVS:
        out = tmp / f"{csv.stem}.npy"
        assert main(["features", "--model", "demo", "--csv", str(csv), "--normalize", "--precision", "fp32",
                     "--device", "cpu", "--out", str(out)]) == 0
        parts.append(np.load(out))
    X = np.concatenate(parts)
    np.save(tmp / "all_embeddings.npy", X)
    return tmp / "all_embeddings.npy"


def test_default_recipe_learns_on_sample(sample_embeddings, tmp_path, caplog):
    """Issue 18 item 1: `panderm concepts train-sae --embeddings X.npy` with its defaults must learn.

    Before the fix (pre-bias zeros, resampling every 10 epochs to the end) this ended at FVU 4.15 with 64 %
    dead latents; the reference's own recipe (no resampling) at FVU 0.064 with 65 % dead.
    """
    from panderm.cli import main

    X = np.load(sample_embeddings)
    out = tmp_path / "sae"
    with caplog.at_level("WARNING"):
        assert main(["concepts", "train-sae", "--embeddings", str(sample_embeddings), "--device", "cpu",
                     "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    final = res["final"]
    print(f"\ndefault recipe on the bundled sample ({X.shape[0]} x {X.shape[1]} demo embeddings, "
          f"{res['n_latents']} latents, {final['epoch']} epochs): FVU {final['fvu']:.4f}, "
          f"dead fraction {final['dead_fraction']:.3f}, L0 {final['l0']:.1f}")
    assert res["config"]["pre_bias_init"] == "geometric_median" and res["config"]["resample_every"] == 10
    assert final["fvu"] < 0.3
    assert final["dead_fraction"] < 0.5
    assert res["warnings"] == [] and "warning: the SAE" not in caplog.text
    history = [json.loads(line) for line in (out / "sae_history.jsonl").read_text().splitlines()]
    resampled_at = [r["epoch"] for r in history if r["n_resampled"]]
    assert resampled_at and max(resampled_at) <= 40  # at most 4 resamplings, every 10 epochs, then it settles

    # The reference's recipe on the same data ends with most latents dead: one warning line, kept in the summary.
    caplog.clear()
    cfg = SAEConfig(d_in=X.shape[1], resample_every=0, pre_bias_init="zeros")
    with caplog.at_level("WARNING"):
        _, ref_history = train_sae(X, cfg)
    ref = ref_history[-1]
    print(f"reference recipe (zero pre-bias, no resampling): FVU {ref['fvu']:.4f}, "
          f"dead fraction {ref['dead_fraction']:.3f}")
    assert ref["dead_fraction"] > 0.5
    lines = [r.getMessage() for r in caplog.records if "warning: the SAE" in r.getMessage()]
    assert len(lines) == 1 and "dead" in lines[0] and "pre_bias_init geometric_median" in lines[0], lines


def test_end_of_training_warning_lines():
    from panderm.tasks.concepts.sae import training_warning

    cfg = SAEConfig(d_in=4, pre_bias_init="zeros", resample_every=0)
    assert training_warning({"fvu": 0.9, "dead_fraction": 0.5}, cfg) is None  # the limits themselves are fine
    both = training_warning({"fvu": 6.79, "dead_fraction": 0.67}, cfg, {"pre_bias_init": "--pre-bias-init",
                                                                        "resample_every": "--resample-every"})
    assert "FVU 6.79 > 1" in both and "67% of the latents dead" in both and "\n" not in both
    assert "--pre-bias-init geometric_median" in both and "--resample-every 10" in both
    fvu_only = training_warning({"fvu": 1.5, "dead_fraction": 0.1}, SAEConfig(d_in=4))
    assert "FVU 1.5" in fvu_only and "dead" not in fvu_only and "pre_bias_init" not in fvu_only


def restated_resampling(model, X, dead, seed, n_inputs, l1):
    """Anthropic's resampling, restated from its description in float64 numpy; shares only the random draws
    (the row subset and the loss²-weighted draw without replacement) with the implementation."""
    g = torch.Generator().manual_seed(seed)
    b = model.pre_bias.detach().double().numpy()
    we = model.encoder.weight.detach().double().numpy()
    be = model.encoder.bias.detach().double().numpy()
    wd = model.decoder.weight.detach().double().numpy()
    rows = torch.randperm(X.shape[0], generator=g)[:n_inputs].numpy()
    xs = X[rows].astype(np.float64)
    f = np.maximum((xs - b) @ we.T + be, 0.0)
    loss = ((xs - (f @ wd.T + b)) ** 2).mean(axis=1) + l1 * np.abs(f).sum(axis=1)
    pick = torch.multinomial(torch.from_numpy(loss ** 2), int(dead.sum()), replacement=False, generator=g).numpy()
    v = xs[pick] - b
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    alive_norm = np.linalg.norm(we[~dead], axis=1).mean()
    return {"decoder": v.T, "encoder": v * 0.2 * alive_norm, "bias": np.zeros(int(dead.sum())), "rows": rows[pick]}


@pytest.mark.parametrize("l1", [0.0, 0.5])
def test_resampling_equals_restatement(l1):
    X, _ = planted_data(n=300)
    X = X + 2.0  # a common component, as real embeddings have
    cfg = small_cfg()
    model = SparseAutoencoder.from_config(cfg, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    for start in range(0, 256, 64):  # fill Adam's moments, move the pre-bias
        sae_train_step(model, opt, torch.from_numpy(X[start:start + 64]), cfg)
    dead = np.zeros(model.n_latents, dtype=bool)
    dead[[1, 4, 9, 33, 60]] = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    want = restated_resampling(model, X, dead, seed=7, n_inputs=200, l1=l1)
    n = resample_dead_latents(model, X, dead, opt, torch.Generator().manual_seed(7), n_inputs=200, l1=l1)
    assert n == 5 and len(set(want["rows"].tolist())) == 5  # distinct inputs
    np.testing.assert_allclose(model.decoder.weight.detach()[:, dead].numpy(), want["decoder"], atol=2e-6)
    np.testing.assert_allclose(model.encoder.weight.detach()[dead].numpy(), want["encoder"], rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(model.encoder.bias.detach()[dead].numpy(), want["bias"])
    # Nothing else moved; the resampled rows' Adam moments are zero, the others' untouched.
    keep = torch.from_numpy(~dead)
    assert torch.equal(model.pre_bias.detach(), before["pre_bias"])
    assert torch.equal(model.encoder.weight.detach()[keep], before["encoder.weight"][keep])
    assert torch.equal(model.encoder.bias.detach()[keep], before["encoder.bias"][keep])
    assert torch.equal(model.decoder.weight.detach()[:, keep], before["decoder.weight"][:, keep])
    for param, axis in ((model.encoder.weight, 0), (model.encoder.bias, 0), (model.decoder.weight, 1)):
        for key in ("exp_avg", "exp_avg_sq"):
            now, then = opt.state[param][key], moments[param][key]
            assert torch.all(now.index_select(axis, torch.from_numpy(np.flatnonzero(dead))) == 0)
            kept = torch.from_numpy(np.flatnonzero(~dead))
            assert torch.equal(now.index_select(axis, kept), then.index_select(axis, kept))
    assert torch.equal(opt.state[model.pre_bias]["exp_avg"], moments[model.pre_bias]["exp_avg"])


def test_resampling_stops_after_max_resamples(planted, monkeypatch):
    import panderm.tasks.concepts.sae_train as sae_module  # the training loop looks the function up here

    calls = []
    real = sae_module.resample_dead_latents

    def counting(*args, **kwargs):
        calls.append(kwargs.get("l1"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sae_module, "resample_dead_latents", counting)
    X = planted[0][:500]
    train_sae(X, small_cfg(epochs=8, resample_every=1, max_resamples=3))
    assert calls == [small_cfg().l1] * 3  # epochs 1-3 only, with the training L1 in the sampling loss
    calls.clear()
    train_sae(X, small_cfg(epochs=8, resample_every=2, max_resamples=None))
    assert len(calls) == 3  # epochs 2, 4, 6 (never after the last)
    calls.clear()
    train_sae(X, small_cfg(epochs=4, resample_every=1, k=3))
    assert calls == [0.0] * 3  # TopK: no L1 term in the loss


# ---------------------------------------------------------------------------------------------- issue 13


def test_divergence_stops_with_one_line(planted, tmp_path, capsys):
    """Embeddings scaled by 1e30 used to train to all-NaN weights and exit 0 ("trained")."""
    from panderm.cli import main
    from panderm.tasks.concepts.sae import SAETrainingError

    X = planted[0][:300] * np.float32(1e30)
    with pytest.raises(SAETrainingError, match=r"diverged at epoch 1: .*not finite.*nothing was saved") as info:
        train_sae(X, small_cfg(epochs=3))
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)
    emb = tmp_path / "huge.npy"
    np.save(emb, X)
    capsys.readouterr()
    assert main(["concepts", "train-sae", "--embeddings", str(emb), "--epochs", "3", "--expansion", "2",
                 "--device", "cpu", "--out", str(tmp_path / "run")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "diverged" in err[0] and "--normalize" in err[0], err
    assert not (tmp_path / "run" / "sae.safetensors").exists()


def test_absurd_sizes_are_one_line_before_allocation(planted, tmp_path, capsys):
    """Issue 13: an SAE config claiming expansion 10^7 allocated ~160 GB (MemoryError traceback).

    The sizes here are terabytes, more than any machine this runs on, so the check always refuses them.
    """
    from panderm.cli import main

    wide = np.random.default_rng(0).normal(size=(10, 768)).astype(np.float32)
    with pytest.raises(DataError, match=r"768 inputs x 7,680,000,000 latents needs about .* GB .*choose fewer latents"):
        train_sae(wide, SAEConfig(d_in=768, expansion=10**7))
    with pytest.raises(DataError, match="needs about"):
        SparseAutoencoder(768, 768 * 10**7)
    # A saved SAE whose config claims another size than its weights.
    model, _ = train_sae(planted[0][:200], small_cfg(epochs=1))
    folder = save_sae(model, small_cfg(epochs=1), tmp_path / "sae")
    meta = json.loads((folder / "sae_config.json").read_text())
    meta["config"]["expansion"] = 10**10
    (folder / "sae_config.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"claims d_in=16, n_latents=160,000,000,000 but sae.safetensors holds "
                                        r"d_in=16, n_latents=64"):
        load_sae(folder)
    # The CLI: one line, before any training.
    emb = tmp_path / "emb.npy"
    np.save(emb, wide)
    capsys.readouterr()
    assert main(["concepts", "train-sae", "--embeddings", str(emb), "--expansion", str(10**7), "--device", "cpu",
                 "--out", str(tmp_path / "run")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "needs about" in err[0], err


def test_cli_reruns_are_byte_identical(planted, tmp_path):
    """Issue 13: the same flags and seed gave different files on rerun (safetensors metadata order, the
    temporary file's name inside autoencoder.pth)."""
    import subprocess
    import sys

    emb = tmp_path / "emb.npy"
    np.save(emb, planted[0][:600])
    files = ("sae.safetensors", "autoencoder.pth", "learned_activation.npy")
    digests = []
    for run in ("a", "b"):  # separate processes: hash seeds and temp names differ as they would for a user
        proc = subprocess.run([sys.executable, "-m", "panderm.cli", "concepts", "train-sae", "--embeddings", str(emb),
                               "--expansion", "2", "--epochs", "6", "--batch-size", "128", "--resample-every", "2",
                               "--device", "cpu", "--out", str(tmp_path / run)],
                              capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr
        digests.append({name: (tmp_path / run / name).read_bytes() for name in files})
    for name in files:
        assert digests[0][name] == digests[1][name], name
