"""Where training runs: the autocast rule shared by finetuning, multimodal training and segmentation."""
from __future__ import annotations

import contextlib

import torch


def training_autocast(device: torch.device, precision: str):
    """CUDA autocast for `amp` (float16) / `amp_bf16` / `bf16`; float32 on CPU and for `fp32`."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision in ("amp_bf16", "bf16") else torch.float16
    return torch.autocast("cuda", dtype=dtype)
