"""What an SAE is made of and how it is trained (:class:`SAEConfig`), its errors, and the memory check run
before anything is allocated. The recipe and its departures from the reference: :mod:`panderm.tasks.concepts.sae`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from panderm.errors import DataError, ModelError
from panderm.validation import check_int

_PRE_BIAS_INITS = ("zeros", "mean", "geometric_median")
_INITS = ("reference", "tied")


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
    check_int(value, f"SAE setting {name}", minimum)


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
