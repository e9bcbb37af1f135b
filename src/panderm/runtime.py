"""Where code runs: the device a run asks for, and the autocast and loss-scaling rules shared by finetuning,
multimodal training and segmentation (the one home of training precision; feature extraction's inference rules
are in features)."""
from __future__ import annotations

import contextlib
import logging

import torch

from .distributed import local_device
from .errors import PandermError

#: precisions whose CUDA autocast is float16 and so needs a GradScaler
FLOAT16_PRECISIONS = ("amp", "fp16")


def training_autocast(device: torch.device, precision: str):
    """CUDA autocast for `amp` (float16) / `amp_bf16` / `bf16`; float32 on CPU and for `fp32`."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision in ("amp_bf16", "bf16") else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The loss scaler of a training step: active for float16 autocast on CUDA, a pass-through otherwise (its
    state still goes into last.pt, so a resumed run restores it either way)."""
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and precision in FLOAT16_PRECISIONS)


def resolve_device(device: str | None, flag: str = "device", reference_cuda: bool = False) -> str:
    """The device to run on: `auto` (or None, a door's reference default) picks CUDA when present, else CPU.

    An explicit device that is not there (`cuda` / `cuda:1` without that GPU, a misspelling) is one error line
    naming `flag` (the caller's name for the setting), never a silent fall-back to CPU. `reference_cuda`: a door
    whose reference scripts all pass a fixed `cuda` takes a bare `cuda` as "the GPU when present" (CPU with a
    warning line).
    """
    if device is None or device == "auto":
        return local_device("cuda") if torch.cuda.is_available() else "cpu"
    if reference_cuda and device == "cuda" and not torch.cuda.is_available():
        logging.getLogger("panderm").warning("%s cuda: no CUDA GPU is available; running on CPU (as the reference "
                                             "scripts' fixed value, this door falls back)", flag)
        return "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PandermError(f"{flag} {device!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PandermError(f"{flag} {device} was asked for but no CUDA GPU is available; use {flag} cpu "
                               f"(or {flag} auto: CUDA when present, else CPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PandermError(f"{flag} {device} was asked for but only {torch.cuda.device_count()} CUDA device(s) "
                               f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PandermError(f"{flag} {device} was asked for but MPS is not available; use {flag} cpu or auto")
    return local_device(device)
