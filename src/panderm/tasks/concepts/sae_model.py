"""The sparse autoencoder module itself (tied pre-bias, unit-norm decoder, ReLU or TopK) and its codes.

The maths and the initialisation are described in :mod:`panderm.tasks.concepts.sae`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from panderm.errors import DataError
from panderm.tasks.concepts.sae_config import _INITS, SAEConfig, _check_int, check_sae_fits
from panderm.validation import as_matrix


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


def _check_model_matches(model: SparseAutoencoder, cfg: SAEConfig) -> None:
    got = (model.d_in, model.n_latents, model.k)
    want = (cfg.d_in, cfg.latents, cfg.k)
    if got != want:
        raise DataError(f"SAE (d_in, n_latents, k) = {got} does not match the config {want}")


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
