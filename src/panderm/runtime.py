"""Where training runs: the autocast and loss-scaling rules shared by finetuning, multimodal training and
segmentation (the one home of training precision; feature extraction's inference rules are in features)."""
from __future__ import annotations

import contextlib

import torch

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
