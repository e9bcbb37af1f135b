"""Reading weight files safely and loading them strictly.

Every loader in the reference uses `strict=False`, so a wrong file silently gives
a randomly initialised network. Here a missing or unexpected key is an error that
lists the first few offenders.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ..checkpoint_io import load_torch
from ..errors import ModelError

_MAX_LISTED = 5


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `.safetensors` file or a torch file with `weights_only=True` (checkpoint_io.load_torch).

    Unwraps the usual containers (`state_dict`, `model`, `module`) and strips a
    leading `module.` (DataParallel) from every key.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot read weights file {path}: {first}") from None
    else:
        obj = load_torch(path, "weights file")
    for container in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and container in obj and isinstance(obj[container], Mapping):
            obj = obj[container]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str, keep_only: bool = True) -> dict:
    """Keys under `prefix` with the prefix removed (others dropped when `keep_only`)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        elif not keep_only:
            out[key] = value
    return out


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with a one-line error naming the keys at fault."""
    expected = module.state_dict()
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
        raise ModelError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
    bad_shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if bad_shapes:
        raise ModelError(f"checkpoint {source} has wrong tensor shapes: {_listing(bad_shapes)}")
    module.load_state_dict(state_dict, strict=True)
