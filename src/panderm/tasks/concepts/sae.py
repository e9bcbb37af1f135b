"""Sparse autoencoder (SAE) over image embeddings, in plain PyTorch.

The model is the PanDerm-2 reference SAE (ref-panderm2 §6.2):

* ``f = ReLU(W_e (x − b) + b_e)`` and ``x̂ = W_d f + b``, where ``b`` is a **tied pre-bias**, subtracted
  before the encoder and added back after the decoder;
* the decoder columns (the dictionary, ``W_d[:, j]``) are kept at unit norm: the gradient component
  parallel to each column is removed before the optimiser step and the columns are renormalised after it;
* loss = mean over the batch of ``mean_d (x − x̂)² + λ Σ_j |f_j|`` with ``λ = 3e-5``;
* Adam (lr 5e-4, betas 0.9/0.999, eps 1e-8), batch 4096, expansion ×8, 200 epochs, the reference's
  initialisation (see :meth:`SparseAutoencoder.reset_parameters`).

The default *recipe* (:class:`SAEConfig`) is the one the reference's SAE library was written for, the
Anthropic "Towards Monosemanticity" recipe, which the reference itself never ran (its pre-bias stays at
zero and its resampling condition is always false, ref-panderm2 §6.2, §8 item 18):

* **pre-bias at the geometric median** of the training embeddings (``pre_bias_init``; the reference: zeros).
  Image embeddings share a large common component (L2-normalised ones typically have ‖mean‖ ≈ 0.9); with
  ``b = 0`` every latent has to learn it, and a resampled latent points along it and fires on every input.
* **dead-latent resampling**, every ``resample_every`` epochs and at most ``max_resamples`` times (4, as the
  recipe and the reference library's default), so the last resampling is long before the end of training:
  latents that fired on at most ``dead_threshold`` of the samples since the last resampling are
  re-initialised towards inputs drawn with probability ∝ their loss², the encoder row scaled to 0.2 × the
  mean norm of the alive encoder rows, encoder bias 0, Adam moments zeroed (see
  :func:`resample_dead_latents`). ``resample_every=0`` and ``pre_bias_init="zeros"`` give the reference.

Measured on the demo-model embeddings of the bundled sample (465 × 64, ×8 latents, 200 epochs): the
reference's zero pre-bias with unlimited resampling ended at FVU 4.15 with 64 % dead latents; this recipe
ends at FVU ≈ 0.02 with about 20 % (``tests/test_concepts_sae.py::test_default_recipe_learns_on_sample``).
Training ends with a warning when FVU > 1 or more than half the latents are dead, and stops with one line
(:class:`SAETrainingError`) when the loss or the weights stop being finite.

Other differences from the reference, all deliberate:

* **TopK alternative** (``k``): keep the k largest pre-activations per sample (then ReLU), no L1 term,
  plus an auxiliary loss that lets dead latents reconstruct the residual (Gao et al. 2024, "AuxK").
* Per-epoch metrics (loss, L0, fraction of variance unexplained, dead and dense latent fractions) go to a
  JSONL log and a PNG instead of wandb.
* Checkpoints are ``sae.safetensors`` + ``sae_config.json``; the reference ``autoencoder.pth`` is read
  with ``torch.load(weights_only=True)`` (no arbitrary pickles).
* Training is seeded and deterministic on CPU (init, pre-bias sample, shuffling and resampling draw from one
  generator seeded with ``seed``), and the files are byte-identical across reruns.
* Sizes are checked against the machine's memory before anything is allocated.

Arrays in, arrays out: ``X`` is ``[N, d_in]`` float; codes are ``[N, n_latents]`` float32 in input order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from panderm.errors import DataError, ModelError
from panderm.progress import track
from panderm.report import append_jsonl, atomic_path, save_figure, write_json
from panderm.tasks.concepts._validate import as_matrix

log = logging.getLogger(__name__)

__all__ = [
    "SAEConfig",
    "SAECheckpointError",
    "SAETrainingError",
    "SparseAutoencoder",
    "sae_loss",
    "topk_aux_loss",
    "sae_train_step",
    "resample_dead_latents",
    "train_sae",
    "training_warning",
    "check_sae_fits",
    "save_sae",
    "load_sae",
    "sae_activations",
    "decoder_directions",
    "plot_history",
]

#: File names inside a saved SAE folder.
SAE_WEIGHTS = "sae.safetensors"
SAE_CONFIG = "sae_config.json"
SAE_FORMAT = "panderm-sae"
SAE_FORMAT_VERSION = 1

#: At most this many rows are scored when choosing the inputs that resampled latents point at.
RESAMPLE_INPUTS = 16384
#: Resampled encoder rows get this fraction of the mean norm of the alive encoder rows (Anthropic's 0.2),
#: so a revived latent fires on its input without dominating the others.
RESAMPLE_ENCODER_SCALE = 0.2
#: Training ends with a warning when the final FVU exceeds this (worse than predicting the mean) ...
WARN_FVU = 1.0
#: ... or when more than this fraction of the latents is dead.
WARN_DEAD_FRACTION = 0.5

_PRE_BIAS_INITS = ("zeros", "mean", "geometric_median")
_INITS = ("reference", "tied")
# Our parameter names, in state-dict order.
_OUR_KEYS = ("pre_bias", "encoder.weight", "encoder.bias", "decoder.weight")
# The reference (ai-safety-foundation/sparse_autoencoder, n_components=1) names for the same tensors.
_REFERENCE_KEYS = {
    "tied_bias": "pre_bias",
    "encoder._weight": "encoder.weight",
    "encoder._bias": "encoder.bias",
    "decoder._weight": "decoder.weight",
}


class SAECheckpointError(DataError, ModelError):
    """An SAE checkpoint that cannot be read as given (missing, another architecture, bad shapes).

    Both a :class:`DataError` and a :class:`ModelError`, so either ``except`` catches it.
    """


class SAETrainingError(DataError):
    """SAE training that cannot go on: the loss or the weights stopped being finite (nothing is saved)."""


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------


@dataclass
class SAEConfig:
    """Everything needed to build and train an SAE; saved next to the weights.

    Defaults are the PanDerm-2 reference settings (sizes, loss, optimiser, schedule), with the recipe of the
    reference's SAE library (Anthropic's): ``pre_bias_init="geometric_median"`` and resampling every
    ``resample_every`` epochs at most ``max_resamples`` times. ``resample_every=0, pre_bias_init="zeros"`` is
    the reference as it ran.
    """

    d_in: int
    #: Latents per input dimension; ``n_latents`` overrides the product when set.
    expansion: int = 8
    n_latents: int | None = None
    #: L1 coefficient λ (ReLU SAE only; a TopK SAE has no L1 term).
    l1: float = 3e-5
    lr: float = 5e-4
    batch_size: int = 4096
    epochs: int = 200
    #: TopK SAE: number of active latents per sample. ``None`` is the reference ReLU+L1 SAE.
    k: int | None = None
    #: TopK auxiliary loss: number of dead latents used to model the residual (``None``: ``d_in // 2``)
    #: and the loss weight (Gao et al. use 1/32).
    aux_k: int | None = None
    aux_coef: float = 1 / 32
    #: Resample dead latents every this many epochs (never after the last one); 0 disables resampling.
    resample_every: int = 10
    #: At most this many resamplings (Anthropic's recipe and the reference library: 4); None: no limit.
    max_resamples: int | None = 4
    #: A latent is dead when it fired on at most this fraction of the samples in the window.
    dead_threshold: float = 0.0
    #: A latent is dense when it fired on more than this fraction of the epoch's samples (saev's 1e-2).
    dense_threshold: float = 1e-2
    #: Initial tied pre-bias: "geometric_median" (the recipe), "mean" of the training data, or "zeros" (what
    #: the reference ran: its library's geometric-median init was never given the data).
    pre_bias_init: str = "geometric_median"
    #: Weight init: "reference" or "tied" (encoder = decoderᵀ); ``None`` = reference for ReLU, tied for TopK.
    init: str | None = None
    seed: int = 0
    device: str = "cpu"

    @property
    def latents(self) -> int:
        """The number of learned features F."""
        return int(self.n_latents) if self.n_latents is not None else int(self.d_in) * int(self.expansion)

    @property
    def init_scheme(self) -> str:
        return self.init or ("reference" if self.k is None else "tied")

    @property
    def aux_latents(self) -> int:
        return int(self.aux_k) if self.aux_k is not None else max(1, int(self.d_in) // 2)

    def validate(self) -> "SAEConfig":
        """Return self, or raise DataError naming the bad setting."""
        _check_int(self.d_in, "d_in", 1)
        _check_int(self.expansion, "expansion", 1)
        if self.n_latents is not None:
            _check_int(self.n_latents, "n_latents", 1)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.epochs, "epochs", 0)
        _check_int(self.resample_every, "resample_every", 0)
        if self.max_resamples is not None:
            _check_int(self.max_resamples, "max_resamples", 1)
        _check_int(self.seed, "seed", 0)
        for name in ("l1", "lr", "aux_coef", "dead_threshold", "dense_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise DataError(f"SAE setting {name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise DataError(f"SAE setting lr must be > 0, got {self.lr!r}")
        if self.k is not None:
            _check_int(self.k, "k", 1)
            if self.k > self.latents:
                raise DataError(f"SAE setting k={self.k} exceeds the number of latents {self.latents}")
        if self.aux_k is not None:
            _check_int(self.aux_k, "aux_k", 1)
        if self.pre_bias_init not in _PRE_BIAS_INITS:
            raise DataError(f"SAE setting pre_bias_init must be one of {_PRE_BIAS_INITS}, got {self.pre_bias_init!r}")
        if self.init is not None and self.init not in _INITS:
            raise DataError(f"SAE setting init must be one of {_INITS} or None, got {self.init!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SAEConfig":
        """Build from a saved dict; unknown keys are an error (a newer or foreign config)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DataError(f"SAE config has unknown settings {unknown}")
        if "d_in" not in data:
            raise DataError("SAE config lacks d_in")
        return cls(**data).validate()


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"SAE setting {name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------------------
# Sizes: checked before anything is allocated
# --------------------------------------------------------------------------------------------------------


def _machine_bytes(device: str | torch.device) -> tuple[int | None, str]:
    """Total memory of ``device`` in bytes (None when unknown) and what to call it in a message."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(dev).total_memory), f"GPU memory ({dev})"
        except Exception:  # noqa: BLE001 - no such GPU: the device check that follows says so
            return None, str(dev)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")), "RAM"
    except (ValueError, OSError, AttributeError):
        return None, "RAM"


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB"


def check_sae_fits(
    d_in: int,
    n_latents: int,
    device: str | torch.device = "cpu",
    n_rows: int = 0,
    batch_size: int = 0,
    training: bool = False,
    codes_rows: int = 0,
) -> int:
    """Estimated bytes for an SAE of ``d_in`` × ``n_latents``; DataError (one line) if it exceeds ``device``.

    Weights: ``2·D·F + D + F`` float32. ``training`` adds their gradients and Adam's two moments, the
    ``n_rows × D`` data kept on the device, and the per-batch ``batch × F`` activations (about six copies).
    ``codes_rows`` adds the ``[codes_rows, F]`` float32 codes written after training (host memory). Called
    before any allocation, so a config claiming an absurd size is one line, not a MemoryError.
    """
    d, f = int(d_in), int(n_latents)
    weights = (2 * d * f + d + f) * 4
    need = weights
    if training:
        need = 4 * weights + int(n_rows) * d * 4 + 6 * min(int(batch_size), max(int(n_rows), 1)) * f * 4
    checks = [(need, device)]
    if codes_rows:
        checks.append((int(codes_rows) * f * 4 + (weights if torch.device(device).type != "cpu" else need), "cpu"))
    for amount, dev in checks:
        have, word = _machine_bytes(dev)
        if have is not None and amount > have:
            purpose = "to train" if training else "for its weights"
            if codes_rows and dev == "cpu":
                purpose += f" and its codes of {int(codes_rows):,} rows"
            raise DataError(
                f"an SAE of {d} inputs x {f:,} latents needs about {_gb(amount)} of {word} {purpose}, more than "
                f"the {_gb(have)} this machine has; choose fewer latents (expansion / n_latents)"
            )
    return need


# --------------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------------


def _as_matrix(X: Any, name: str = "X", d_in: int | None = None) -> np.ndarray:
    """``X`` as a finite float32 ``[N, D]`` array; a column count other than ``d_in`` is a DataError."""
    return as_matrix(X, name, d_in, what="columns (the SAE's d_in)")


# --------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------


class SparseAutoencoder(nn.Module):
    """Tied-pre-bias SAE with a unit-norm decoder; ReLU (``k=None``) or TopK activation.

    Parameters: ``pre_bias`` ``[D]`` (b), ``encoder.weight`` ``[F, D]`` (W_e), ``encoder.bias`` ``[F]`` (b_e),
    ``decoder.weight`` ``[D, F]`` (W_d, column j is dictionary direction j).
    """

    def __init__(self, d_in: int, n_latents: int, k: int | None = None):
        super().__init__()
        _check_int(d_in, "d_in", 1)
        _check_int(n_latents, "n_latents", 1)
        check_sae_fits(d_in, n_latents)  # before the allocation below
        self.d_in = int(d_in)
        self.n_latents = int(n_latents)
        self.k = None if k is None else int(k)
        self.pre_bias = nn.Parameter(torch.zeros(self.d_in))
        # skip_init: the real init (reset_parameters) draws from the caller's generator, not the global RNG.
        self.encoder = nn.utils.skip_init(nn.Linear, self.d_in, self.n_latents)
        self.decoder = nn.utils.skip_init(nn.Linear, self.n_latents, self.d_in, bias=False)
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg: SAEConfig, generator: torch.Generator | None = None) -> "SparseAutoencoder":
        model = cls(cfg.d_in, cfg.latents, cfg.k)
        model.reset_parameters(generator, cfg.init_scheme)
        return model

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None, scheme: str = "reference") -> None:
        """Initialise on CPU from ``generator`` (a fixed default seed when None).

        ``"reference"`` mirrors the reference library: W_e ~ U(±√(6/(F·D))) (its kaiming-uniform on a
        ``[1, F, D]`` tensor sees fan_in = F·D, so the encoder starts almost at zero), b_e ~ U(±1/√F),
        W_d ~ N(0, 1) with unit-norm columns, pre-bias zero. ``"tied"`` sets W_e = W_dᵀ and b_e = 0, the
        TopK recipe (Gao et al.), so every latent starts out responding to its own dictionary direction.
        """
        if scheme not in _INITS:
            raise DataError(f"unknown SAE init {scheme!r}; expected one of {_INITS}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        d, f = self.d_in, self.n_latents
        dec = torch.randn(d, f, generator=g)
        dec /= dec.norm(dim=0, keepdim=True).clamp_min(1e-12)
        if scheme == "reference":
            bound = math.sqrt(6.0 / (f * d))
            enc = (torch.rand(f, d, generator=g) * 2 - 1) * bound
            enc_bias = (torch.rand(f, generator=g) * 2 - 1) / math.sqrt(f)
        else:
            enc = dec.T.clone()
            enc_bias = torch.zeros(f)
        device = self.pre_bias.device
        self.pre_bias.copy_(torch.zeros(d, device=device))
        self.encoder.weight.copy_(enc.to(device))
        self.encoder.bias.copy_(enc_bias.to(device))
        self.decoder.weight.copy_(dec.to(device))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``W_e (x − b) + b_e``, before the ReLU / TopK."""
        return self.encoder(x - self.pre_bias)

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """ReLU, or TopK: keep the k largest pre-activations of each row (then ReLU), zero the rest."""
        if self.k is None:
            return F.relu(z)
        values, indices = z.topk(self.k, dim=-1)
        return torch.zeros_like(z).scatter(-1, indices, F.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes f ``[B, F]`` (non-negative)."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``W_d f + b``."""
        return self.decoder(f) + self.pre_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_hat, f)``."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every dictionary column to unit norm (after each optimiser step)."""
        w = self.decoder.weight
        w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_decoder_grad_(self) -> None:
        """Remove from each decoder column's gradient its component along that column.

        With unit-norm columns, that component only changes the column's length, which the
        renormalisation undoes anyway; removing it keeps Adam's moments about directions only.
        """
        w, g = self.decoder.weight, self.decoder.weight.grad
        if g is not None:
            g.sub_((g * w).sum(dim=0, keepdim=True) * w)


def decoder_directions(model: SparseAutoencoder) -> np.ndarray:
    """The dictionary as ``[F, D]`` float32 (row j = decoder column j, unit norm)."""
    return model.decoder.weight.detach().T.float().cpu().numpy().copy()


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


def _check_model_matches(model: SparseAutoencoder, cfg: SAEConfig) -> None:
    got = (model.d_in, model.n_latents, model.k)
    want = (cfg.d_in, cfg.latents, cfg.k)
    if got != want:
        raise DataError(f"SAE (d_in, n_latents, k) = {got} does not match the config {want}")


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
        f"nothing was saved. The embeddings reach |x| = {peak:.3g}: use L2-normalised embeddings (panderm features "
        "--normalize) or scale them to about unit norm, or lower the learning rate"
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
# Activations
# --------------------------------------------------------------------------------------------------------


def sae_activations(
    model: SparseAutoencoder, X: Any, batch_size: int = 512, out: np.ndarray | None = None
) -> np.ndarray:
    """Codes ``f`` for every row of ``X``, as ``[N, F]`` float32 in input order.

    Computed in batches of ``batch_size`` (the reference uses 512) on the model's device. ``out`` may be a
    preallocated ``[N, F]`` float32 array (e.g. ``np.lib.format.open_memmap``) for data too large for RAM.
    """
    X = _as_matrix(X, "X", model.d_in)
    _check_int(batch_size, "batch_size", 1)
    shape = (X.shape[0], model.n_latents)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise DataError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
    device = model.pre_bias.device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, X.shape[0], batch_size):
                xb = torch.from_numpy(X[start:start + batch_size]).to(device)
                out[start:start + batch_size] = model.encode(xb).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


# --------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------


def save_sae(model: SparseAutoencoder, cfg: SAEConfig, folder: str | Path) -> Path:
    """Write ``folder/sae.safetensors`` and ``folder/sae_config.json`` atomically; return the folder."""
    from safetensors.torch import save_file

    cfg.validate()
    _check_model_matches(model, cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().float().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(folder / SAE_WEIGHTS, suffix=".safetensors") as tmp:
        # One metadata entry: safetensors writes the entries in hash order, which changes from process to
        # process, so two would make identical weights differ in bytes. The version is in sae_config.json.
        save_file(tensors, str(tmp), metadata={"format": SAE_FORMAT})
    write_json(
        folder / SAE_CONFIG,
        {
            "format": SAE_FORMAT,
            "version": SAE_FORMAT_VERSION,
            "d_in": model.d_in,
            "n_latents": model.n_latents,
            "k": model.k,
            "config": cfg.to_dict(),
        },
    )
    return folder


def load_sae(path: str | Path, device: str = "cpu") -> tuple[SparseAutoencoder, SAEConfig]:
    """Load an SAE; return ``(model, cfg)`` with the model in eval mode on ``device``.

    ``path`` may be a folder written by :func:`save_sae` (or its ``.safetensors`` / ``.json`` file), or a
    reference ``autoencoder.pth`` (a dict with ``model_state_dict`` and ``model_config``, or a bare state
    dict), read with ``torch.load(weights_only=True)``. For a reference checkpoint the returned config
    holds the shapes and otherwise the reference defaults. Anything else raises
    :class:`SAECheckpointError` (a DataError).
    """
    path = Path(path)
    if not path.exists():
        raise SAECheckpointError(f"SAE checkpoint not found: {path}")
    if path.is_dir():
        if (path / SAE_WEIGHTS).exists() or (path / SAE_CONFIG).exists():
            model, cfg = _load_ours(path)
        elif (path / "autoencoder.pth").exists():
            model, cfg = _load_reference(path / "autoencoder.pth")
        else:
            raise SAECheckpointError(f"{path} holds neither {SAE_WEIGHTS} + {SAE_CONFIG} nor autoencoder.pth")
    elif path.suffix in (".safetensors", ".json"):
        model, cfg = _load_ours(path.parent)
    else:
        model, cfg = _load_reference(path)
    cfg.device = str(device)
    return model.to(device).eval(), cfg


def _load_ours(folder: Path) -> tuple[SparseAutoencoder, SAEConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = folder / SAE_WEIGHTS, folder / SAE_CONFIG
    for needed in (weights, config):
        if not needed.exists():
            raise SAECheckpointError(f"SAE folder {folder} lacks {needed.name}")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SAECheckpointError(f"{config} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SAE_FORMAT or not isinstance(meta.get("config"), dict):
        raise SAECheckpointError(f"{config} is not a {SAE_FORMAT} config")
    if meta.get("version") != SAE_FORMAT_VERSION:
        raise SAECheckpointError(
            f"{config} has format version {meta.get('version')}; this panderm reads {SAE_FORMAT_VERSION}"
        )
    try:
        cfg = SAEConfig.from_dict(meta["config"])
    except (DataError, TypeError) as exc:
        raise SAECheckpointError(f"{config}: {exc}") from None
    _check_stored_shapes(weights, cfg)  # before the config's sizes are allocated
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise SAECheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    model = SparseAutoencoder(cfg.d_in, cfg.latents, cfg.k)
    _load_state(model, state, weights)
    return model, cfg


def _check_stored_shapes(weights: Path, cfg: SAEConfig) -> None:
    """The tensor shapes in the safetensors header (read without loading) must be the ones ``cfg`` claims."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            stored = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SAECheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    d, f = cfg.d_in, cfg.latents
    claimed = {"pre_bias": (d,), "encoder.weight": (f, d), "encoder.bias": (f,), "decoder.weight": (d, f)}
    if set(stored) != set(claimed):
        raise SAECheckpointError(f"{weights}: parameters {sorted(stored)} do not match an SAE's {sorted(claimed)}")
    if stored != claimed:
        held = stored["decoder.weight"]
        raise SAECheckpointError(
            f"{weights.parent / SAE_CONFIG} claims d_in={d}, n_latents={f:,} but {weights.name} holds "
            f"d_in={held[0]}, n_latents={held[1] if len(held) > 1 else '?'}; the two files do not belong together"
        )


def _load_reference(path: Path) -> tuple[SparseAutoencoder, SAEConfig]:
    from ...checkpoint_io import load_torch

    try:
        obj = load_torch(path, "SAE checkpoint")
    except ModelError as exc:
        raise SAECheckpointError(
            f"{path} cannot be read as a weights-only PyTorch checkpoint (objects other than tensors and "
            f"plain containers are refused): {str(exc).split(': ', 1)[-1]}"
        ) from None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        state, model_config = obj["model_state_dict"], obj.get("model_config") or {}
    elif isinstance(obj, dict):
        state, model_config = obj, {}
    else:
        raise SAECheckpointError(f"{path} holds a {type(obj).__name__}, not an SAE state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SAECheckpointError(f"{path}: model_state_dict is not a mapping of names to tensors")
    components = model_config.get("n_components", 1) if isinstance(model_config, dict) else 1
    if components not in (1, None):
        raise SAECheckpointError(f"{path} holds {components} SAE components; only single-component SAEs can be read")
    state = _from_reference_layout(state, path)
    d_in, n_latents = state["decoder.weight"].shape
    if isinstance(model_config, dict):
        for key, want in (("n_input_features", d_in), ("n_learned_features", n_latents)):
            if key in model_config and model_config[key] != want:
                raise SAECheckpointError(f"{path}: model_config {key}={model_config[key]} but the weights have {want}")
    # The reference's recipe: no resampling, zero pre-bias.
    if n_latents % d_in == 0:
        cfg = SAEConfig(d_in=d_in, expansion=n_latents // d_in, resample_every=0, pre_bias_init="zeros")
    else:
        cfg = SAEConfig(d_in=d_in, expansion=1, n_latents=n_latents, resample_every=0, pre_bias_init="zeros")
    model = SparseAutoencoder(d_in, n_latents)
    _load_state(model, state, path)
    return model, cfg.validate()


def _from_reference_layout(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Map the reference keys and ``[1, ...]`` component axis onto ours; DataError for anything else."""
    keys = set(state)
    if set(_OUR_KEYS) <= keys and not keys - set(_OUR_KEYS):
        return dict(state)  # already our layout (torch.save(model.state_dict()))
    missing = sorted(set(_REFERENCE_KEYS) - keys)
    # The reference's TiedBias modules hold the same tensor as tied_bias, so it appears under aliases too.
    aliases = sorted(k for k in keys if k.endswith("_bias_reference"))
    unknown = sorted(keys - set(_REFERENCE_KEYS) - set(aliases))
    if missing or unknown:
        found = ", ".join(sorted(keys)[:6]) + (" ..." if len(keys) > 6 else "")
        why = f"missing {missing}" if missing else f"unexpected parameters {unknown[:6]}"
        raise SAECheckpointError(
            f"{path} is not a PanDerm-2 (ReLU, tied-bias) SAE checkpoint: {why}; expected exactly "
            f"{sorted(_REFERENCE_KEYS)}; found {found}"
        )
    ref = {ours: _drop_component_axis(state[theirs], theirs, path) for theirs, ours in _REFERENCE_KEYS.items()}
    for alias in aliases:
        if not torch.equal(_drop_component_axis(state[alias], alias, path), ref["pre_bias"]):
            raise SAECheckpointError(f"{path}: {alias} differs from tied_bias; not a tied-bias SAE")
    return ref


def _drop_component_axis(t: torch.Tensor, name: str, path: Path) -> torch.Tensor:
    base_ndim = 2 if name.endswith("_weight") else 1
    if t.ndim == base_ndim + 1:
        if t.shape[0] != 1:
            raise SAECheckpointError(
                f"{path}: {name} has shape {tuple(t.shape)}, i.e. {t.shape[0]} components; only 1 is supported"
            )
        t = t[0]
    if t.ndim != base_ndim:
        raise SAECheckpointError(f"{path}: {name} has shape {tuple(t.shape)}; expected {base_ndim} dimensions")
    return t


def _load_state(model: SparseAutoencoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into ``model`` after checking names and shapes (one-line errors, not torch's)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if set(got) != set(expected):
        raise SAECheckpointError(f"{source}: parameters {sorted(got)} do not match an SAE's {sorted(expected)}")
    bad = [f"{k} {got[k]} (expected {expected[k]})" for k in expected if got[k] != expected[k]]
    if bad:
        raise SAECheckpointError(f"{source}: inconsistent SAE shapes: " + "; ".join(bad))
    for k, v in state.items():
        if not torch.is_floating_point(v) or not bool(torch.isfinite(v).all()):
            raise SAECheckpointError(f"{source}: {k} is not a finite floating-point tensor")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


# --------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-epoch loss, FVU, L0 and dead/dense fractions as one PNG; resampling epochs are marked."""
    from ...report import subplots

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
