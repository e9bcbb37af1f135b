"""Training an SAE: the loss, one optimiser step, dead-latent resampling, the epoch loop and its history plot.

The recipe (pre-bias at the geometric median, resampling schedule) and how it departs from the reference are
described in :mod:`panderm.tasks.concepts.sae`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from panderm.errors import DataError
from panderm.progress import track
from panderm.report import append_jsonl, atomic_path, save_figure, subplots
from panderm.tasks.concepts.sae_config import SAEConfig, SAETrainingError, check_sae_fits
from panderm.tasks.concepts.sae_model import SparseAutoencoder, _as_matrix, _check_model_matches

# The name the training warning has always been logged under.
log = logging.getLogger("panderm.tasks.concepts.sae")

#: At most this many rows are scored when choosing the inputs that resampled latents point at.
RESAMPLE_INPUTS = 16384
#: Resampled encoder rows get this fraction of the mean norm of the alive encoder rows (Anthropic's 0.2),
#: so a revived latent fires on its input without dominating the others.
RESAMPLE_ENCODER_SCALE = 0.2
#: Training ends with a warning when the final FVU exceeds this (worse than predicting the mean) ...
WARN_FVU = 1.0
#: ... or when more than this fraction of the latents is dead.
WARN_DEAD_FRACTION = 0.5


# --------------------------------------------------------------------------------------------------------
# Losses and one training step
# --------------------------------------------------------------------------------------------------------


def sae_loss(x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor, l1: float) -> dict[str, torch.Tensor]:
    """The reference loss: ``mean_batch[ mean_d (x − x̂)² + l1 · Σ_j |f_j| ]``.

    Returns ``{"loss", "mse", "l1"}`` where ``mse`` and ``l1`` are the batch means of the two
    per-sample terms (``l1`` unweighted, so it reads as the mean L1 norm of the codes).
    """
    mse = (x - x_hat).pow(2).mean(dim=1)
    l1_norm = f.abs().sum(dim=1)
    return {"loss": (mse + l1 * l1_norm).mean(), "mse": mse.mean(), "l1": l1_norm.mean()}


def topk_aux_loss(
    model: SparseAutoencoder,
    x: torch.Tensor,
    x_hat: torch.Tensor,
    z: torch.Tensor,
    dead_mask: torch.Tensor | None,
    aux_k: int,
) -> torch.Tensor:
    """AuxK: how well the top ``aux_k`` *dead* latents reconstruct the main model's residual.

    ``Σ‖e − W_d a‖² / Σ‖e‖²`` over the batch, with ``e = x − x̂`` (detached) and ``a`` the ReLU of the
    top-``aux_k`` pre-activations among dead latents. Its gradient reaches dead latents, which the TopK
    selection otherwise never trains. Zero when nothing is dead.
    """
    if dead_mask is None or not bool(dead_mask.any()):
        return z.new_zeros(())
    n_aux = min(int(aux_k), int(dead_mask.sum()))
    masked = z.masked_fill(~dead_mask, float("-inf"))
    values, indices = masked.topk(n_aux, dim=-1)
    a = torch.zeros_like(z).scatter(-1, indices, F.relu(values))
    residual = (x - x_hat).detach()
    return (residual - model.decoder(a)).pow(2).sum() / residual.pow(2).sum().clamp_min(1e-12)


def sae_train_step(
    model: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: SAEConfig,
    dead_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One optimiser step on batch ``x``; returns detached batch statistics.

    Order: forward, loss, backward, remove the parallel decoder-gradient component, step, renormalise
    the decoder. ``dead_mask`` (bool ``[F]``) feeds the TopK auxiliary loss. The returned dict holds
    ``loss``, ``mse``, ``l1``, ``aux`` (batch means), ``sq_err`` (Σ‖x − x̂‖²), ``l0`` (Σ active latents)
    and ``fired`` (``[F]`` per-latent count of samples with f > 0).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    z = model.pre_activations(x)
    f = model.activate(z)
    x_hat = model.decode(f)
    parts = sae_loss(x, x_hat, f, 0.0 if model.k is not None else cfg.l1)
    loss = parts["loss"]
    aux = x.new_zeros(())
    if model.k is not None:
        aux = topk_aux_loss(model, x, x_hat, z, dead_mask, cfg.aux_latents)
        loss = loss + cfg.aux_coef * aux
    loss.backward()
    model.remove_parallel_decoder_grad_()
    optimizer.step()
    model.normalize_decoder_()
    active = (f > 0).detach()
    return {
        "loss": loss.detach(),
        "mse": parts["mse"].detach(),
        "l1": parts["l1"].detach(),
        "aux": aux.detach(),
        "sq_err": (x - x_hat).detach().pow(2).sum(),
        "l0": active.sum(),
        "fired": active.sum(dim=0),
    }


# --------------------------------------------------------------------------------------------------------
# Dead-latent resampling
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def resample_dead_latents(
    model: SparseAutoencoder,
    X: Any,
    dead_mask: Any,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    n_inputs: int = RESAMPLE_INPUTS,
    l1: float = 0.0,
) -> int:
    """Point dead latents at badly reconstructed inputs; return how many were resampled.

    Anthropic's recipe ("Towards Monosemanticity", appendix "Neuron Resampling"; written here from its
    description, as the reference's SAE library implements it):

    1. score up to ``n_inputs`` random rows of ``X`` by the SAE's loss on each,
       ``mean_d (x − x̂)² + l1 · Σ_j |f_j|`` (pass the training ``l1``; 0 for a TopK SAE);
    2. draw one row per dead latent with probability ∝ loss², without replacement while rows last;
    3. decoder column ← the unit vector along the row seen from the pre-bias, ``(x − b) / ‖x − b‖``;
       encoder row ← the same unit vector × 0.2 × the mean norm of the alive encoder rows; encoder bias ← 0;
    4. zero Adam's moments (``exp_avg``, ``exp_avg_sq``) of those rows, columns and bias entries, so stale
       statistics do not push them back.

    Step 3 renormalises ``x − b`` where the recipe's text renormalises the input itself. The encoder sees
    ``x − b``; with the pre-bias at the geometric median the raw input points mostly along the embeddings'
    common component, so the revived latent would fire on about half of all inputs and reconstruct that
    component, which the pre-bias already holds (on the bundled sample: 45 % dead latents at the end against
    20 %). With ``b = 0`` the two are the same.
    """
    dead = torch.as_tensor(np.asarray(dead_mask), dtype=torch.bool).flatten()
    if dead.numel() != model.n_latents:
        raise DataError(f"dead_mask has {dead.numel()} entries but the SAE has {model.n_latents} latents")
    idx = dead.nonzero().flatten()
    if idx.numel() == 0:
        return 0
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    data = X if isinstance(X, torch.Tensor) else torch.from_numpy(_as_matrix(X, "X", model.d_in))
    device = model.pre_bias.device
    rows = torch.randperm(data.shape[0], generator=g)[:n_inputs]
    xs = data[rows].to(device=device, dtype=torch.float32)
    x_hat, f = model(xs)
    loss = (xs - x_hat).pow(2).mean(dim=1) + float(l1) * f.abs().sum(dim=1)
    weights = loss.double().cpu().pow(2)
    if not bool(torch.isfinite(weights).all()) or float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)  # perfect reconstruction everywhere: any input will do
    n_dead = idx.numel()
    pick = torch.multinomial(weights, n_dead, replacement=n_dead > int((weights > 0).sum()), generator=g)
    directions = xs[pick.to(device)] - model.pre_bias
    norms = directions.norm(dim=1, keepdim=True)
    # An input equal to the pre-bias has no direction; give that latent a random one instead.
    degenerate = (norms.squeeze(1) < 1e-12).cpu()
    if bool(degenerate.any()):
        directions[degenerate.to(device)] = torch.randn(int(degenerate.sum()), model.d_in, generator=g).to(device)
        norms = directions.norm(dim=1, keepdim=True)
    directions = directions / norms
    alive = ~dead.to(device)
    enc_norm = model.encoder.weight[alive].norm(dim=1).mean() if bool(alive.any()) else torch.tensor(1.0)
    idx_dev = idx.to(device)
    model.decoder.weight[:, idx_dev] = directions.T
    model.encoder.weight[idx_dev] = directions * (RESAMPLE_ENCODER_SCALE * enc_norm)
    model.encoder.bias[idx_dev] = 0.0
    if optimizer is not None:
        _reset_optimizer_state(optimizer, model, idx_dev)
    return n_dead


def _reset_optimizer_state(optimizer: torch.optim.Optimizer, model: SparseAutoencoder, idx: torch.Tensor) -> None:
    """Zero the per-parameter moment buffers (Adam's exp_avg, exp_avg_sq, ...) of the resampled latents."""
    latent_axis = {model.encoder.weight: 0, model.encoder.bias: 0, model.decoder.weight: 1}
    for param, axis in latent_axis.items():
        state = optimizer.state.get(param, {})
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.index_fill_(axis, idx, 0.0)


# --------------------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------------------


def _geometric_median(x: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Weiszfeld's algorithm in float64, started at the mean."""
    x = x.double()
    m = x.mean(dim=0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-12)
        new = (w[:, None] * x).sum(dim=0) / w.sum()
        done = float((new - m).norm()) <= 1e-9 * (1.0 + float(m.norm()))
        m = new
        if done:
            break
    return m.float()


def _init_pre_bias(model: SparseAutoencoder, X: np.ndarray, how: str, g: torch.Generator) -> None:
    if how == "zeros":
        return
    rows = torch.randperm(X.shape[0], generator=g)[:RESAMPLE_INPUTS]
    sample = torch.from_numpy(X)[rows]
    value = sample.mean(dim=0) if how == "mean" else _geometric_median(sample)
    with torch.no_grad():
        model.pre_bias.copy_(value.to(model.pre_bias.device))


def _total_variance(X: np.ndarray, chunk: int = 65536) -> float:
    """Σ_i ‖x_i − x̄‖² in float64, in chunks so no float64 copy of X is made."""
    mean = X.mean(axis=0, dtype=np.float64)
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        total += float(((X[start:start + chunk] - mean) ** 2).sum())
    return total


def train_sae(
    X: Any,
    cfg: SAEConfig,
    log_path: str | Path | None = None,
    progress: bool = False,
    model: SparseAutoencoder | None = None,
    flag_names: dict[str, str] | None = None,
) -> tuple[SparseAutoencoder, list[dict[str, Any]]]:
    """Train an SAE on ``X`` ``[N, d_in]``; return ``(model, history)``.

    ``history`` has one dict per epoch: ``epoch`` (1-based), ``loss`` (the optimised loss), ``mse``,
    ``l1`` (mean Σ|f|), ``aux`` (TopK auxiliary loss), ``l0`` (mean active latents per sample), ``fvu``
    (Σ‖x − x̂‖² / Σ‖x − x̄‖²), ``dead_fraction`` and ``dense_fraction`` (latents firing on at most
    ``dead_threshold`` / more than ``dense_threshold`` of the epoch's samples), ``n_resampled`` (latents
    resampled after this epoch) and ``seconds``. Metrics come from the training batches as they were
    seen (before each step), so no extra pass over the data is needed.

    ``log_path`` gets the same records as JSON lines (the file is started afresh). ``model`` continues
    training an existing SAE instead of initialising a new one. Seeded from ``cfg.seed``; on CPU two runs
    give identical weights.

    Sizes are checked against the device's memory first (one DataError line). A loss or weights that stop
    being finite raise :class:`SAETrainingError` at the end of that epoch. At the end, a final FVU > 1 or more
    than half the latents dead is logged as one warning line (:func:`training_warning`; ``flag_names`` maps
    setting names to the caller's flags for its hints).
    """
    cfg.validate()
    X = _as_matrix(X, "X", cfg.d_in)
    n = X.shape[0]
    device = torch.device(cfg.device)
    check_sae_fits(cfg.d_in, cfg.latents, device, n_rows=n, batch_size=cfg.batch_size, training=True)
    g = torch.Generator().manual_seed(cfg.seed)
    if model is None:
        model = SparseAutoencoder.from_config(cfg, g)
        _init_pre_bias(model, X, cfg.pre_bias_init, g)
    else:
        _check_model_matches(model, cfg)
    model.to(device)
    model.normalize_decoder_()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    # Data lives on the device once; batches are gathered there (no per-batch host copies on CUDA).
    data = torch.from_numpy(X).to(device)
    total_var = max(_total_variance(X), 1e-30)
    if log_path is not None:
        with atomic_path(log_path) as tmp:
            tmp.write_text("", encoding="utf-8")

    history: list[dict[str, Any]] = []
    window_fired = torch.zeros(model.n_latents, dtype=torch.float64, device=device)
    window_samples = 0
    n_resamplings = 0
    aux_dead: torch.Tensor | None = None  # TopK: latents dead during the previous epoch
    for epoch in track(range(1, cfg.epochs + 1), "SAE epochs", unit="epoch"):
        start_time = time.perf_counter()
        sums = _EpochSums(model.n_latents, device)
        order = torch.randperm(n, generator=g).to(device)  # drawn on CPU: the same permutation on every device
        for start in range(0, n, cfg.batch_size):
            xb = data[order[start:start + cfg.batch_size]]
            sums.add(sae_train_step(model, optimizer, xb, cfg, aux_dead), xb.shape[0])
        freq = sums.fired / n
        window_fired += sums.fired
        window_samples += n
        record = sums.record(epoch, n, total_var, cfg)
        _check_finite(model, record, X)
        if model.k is not None:
            aux_dead = freq <= cfg.dead_threshold
        n_resampled = 0
        if (cfg.resample_every and epoch % cfg.resample_every == 0 and epoch < cfg.epochs
                and (cfg.max_resamples is None or n_resamplings < cfg.max_resamples)):
            dead = (window_fired / window_samples <= cfg.dead_threshold).cpu()
            n_resampled = resample_dead_latents(model, data, dead, optimizer, g, l1=cfg.l1 if model.k is None else 0.0)
            n_resamplings += 1
            window_fired.zero_()
            window_samples = 0
            if aux_dead is not None:
                aux_dead &= ~dead.to(device)  # just revived: give them a chance before AuxK drives them
        record["n_resampled"] = n_resampled
        record["seconds"] = round(time.perf_counter() - start_time, 4)
        history.append(record)
        if log_path is not None:
            append_jsonl(log_path, record)
        if progress:
            print(_format_record(record, cfg.epochs), file=sys.stderr, flush=True)
    model.eval()
    warning = training_warning(history[-1], cfg, flag_names) if history else None
    if warning:
        log.warning("%s", warning)
    return model, history


def _check_finite(model: SparseAutoencoder, record: dict[str, Any], X: np.ndarray) -> None:
    """SAETrainingError (one line) when the epoch's loss or any weight is not finite."""
    bad = [k for k in ("loss", "fvu") if not math.isfinite(record[k])]
    bad += [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if not bad:
        return
    peak = float(np.abs(X).max())
    raise SAETrainingError(
        f"SAE training diverged at epoch {record['epoch']}: {', '.join(bad)} not finite (loss {record['loss']:.4g}); "
        f"nothing was saved. The embeddings reach |x| = {peak:.3g}: use L2-normalised embeddings or scale them to "
        "about unit norm, or lower the learning rate", param="embeddings"
    )


def training_warning(record: dict[str, Any], cfg: SAEConfig, flag_names: dict[str, str] | None = None) -> str | None:
    """One warning line when the final epoch's FVU > 1 or more than half the latents are dead; else None.

    The hints name the settings that fix what was seen, as ``flag_names`` spells them (default: the
    :class:`SAEConfig` field names).
    """
    fvu, dead = float(record.get("fvu", 0.0)), float(record.get("dead_fraction", 0.0))
    problems = []
    if fvu > WARN_FVU:
        problems.append(f"FVU {fvu:.3g} > {WARN_FVU:g} (worse than predicting the mean embedding)")
    if dead > WARN_DEAD_FRACTION:
        problems.append(f"{dead:.0%} of the latents dead (more than {WARN_DEAD_FRACTION:.0%})")
    if not problems:
        return None
    flags = flag_names or {}

    def flag(name: str, value: Any) -> str:
        return f"{flags.get(name, name)} {value}"

    hints = []
    if cfg.pre_bias_init == "zeros":
        hints.append(f"start the pre-bias at the data ({flag('pre_bias_init', 'geometric_median')})")
    if dead > WARN_DEAD_FRACTION and cfg.resample_every == 0 and cfg.k is None:
        hints.append(f"resample dead latents ({flag('resample_every', 10)})")
    hints.append(f"train longer ({flags.get('epochs', 'epochs')}) or use fewer latents "
                 f"({flags.get('expansion', 'expansion')})")
    return (f"warning: the SAE ended training with {' and '.join(problems)}; its codes will mean little. "
            f"Try: {'; '.join(hints)}")


class _EpochSums:
    """Running sums of the step statistics over one epoch (kept on the device to avoid syncs)."""

    def __init__(self, n_latents: int, device: torch.device):
        zero = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.loss, self.mse, self.l1, self.aux, self.sq_err, self.l0 = (zero() for _ in range(6))
        self.fired = torch.zeros(n_latents, dtype=torch.float64, device=device)

    def add(self, step: dict[str, torch.Tensor], batch: int) -> None:
        # Batch means are weighted by batch size, so a short last batch counts for what it is.
        for name in ("loss", "mse", "l1", "aux"):
            setattr(self, name, getattr(self, name) + step[name].double() * batch)
        self.sq_err += step["sq_err"].double()
        self.l0 += step["l0"].double()
        self.fired += step["fired"].double()

    def record(self, epoch: int, n: int, total_var: float, cfg: SAEConfig) -> dict[str, Any]:
        freq = self.fired / n
        return {
            "epoch": epoch,
            "loss": float(self.loss) / n,
            "mse": float(self.mse) / n,
            "l1": float(self.l1) / n,
            "aux": float(self.aux) / n,
            "l0": float(self.l0) / n,
            "fvu": float(self.sq_err) / total_var,
            "dead_fraction": float((freq <= cfg.dead_threshold).double().mean()),
            "dense_fraction": float((freq > cfg.dense_threshold).double().mean()),
        }


def _format_record(r: dict[str, Any], epochs: int) -> str:
    return (
        f"epoch {r['epoch']}/{epochs}  loss {r['loss']:.4g}  fvu {r['fvu']:.4f}  L0 {r['l0']:.1f}  "
        f"dead {r['dead_fraction']:.3f}  dense {r['dense_fraction']:.3f}  resampled {r['n_resampled']}"
    )


# --------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-epoch loss, FVU, L0 and dead/dense fractions as one PNG; resampling epochs are marked."""
    if not history:
        raise DataError("no SAE history to plot (0 epochs)")
    epochs = [r["epoch"] for r in history]
    panels = [
        ("loss", ["loss"], "log"),
        ("fraction of variance unexplained", ["fvu"], "linear"),
        ("L0 (active latents per sample)", ["l0"], "linear"),
        ("latent fractions", ["dead_fraction", "dense_fraction"], "linear"),
    ]
    fig, axes = subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    resampled = [r["epoch"] for r in history if r.get("n_resampled")]
    for ax, (title, keys, scale) in zip(axes, panels):
        for key in keys:
            ax.plot(epochs, [r[key] for r in history], label=key, marker="." if len(epochs) < 40 else None)
        for e in resampled:
            ax.axvline(e, color="grey", linestyle=":", linewidth=0.8)
        if scale == "log" and all(r[keys[0]] > 0 for r in history):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    if resampled:
        fig.suptitle("dotted lines: dead latents resampled", fontsize=9)
    fig.tight_layout()
    return save_figure(path, fig)
