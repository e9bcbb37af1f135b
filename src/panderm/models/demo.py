"""A tiny open_clip model with random weights, for demos and for trying the pipeline.

It is written in the hub's own layout (`open_clip_config.json` + safetensors) and
loaded through the same `local-dir:` path as a real model. Its config carries
`"panderm_random_init": true`, so every output made with it says so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

DEMO_VERSION = 1
TINY_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def cache_root() -> Path:
    """`$PANDERM_CACHE` or `~/.cache/panderm`."""
    return Path(os.environ.get("PANDERM_CACHE") or Path.home() / ".cache" / "panderm").expanduser()


def write_openclip_dir(folder: Path, model_cfg: dict, preprocess_cfg: dict | None = None, seed: int = 0,
                       random_init_flag: bool = True) -> Path:
    """Build an open_clip model from `model_cfg` with seeded random weights and save it hub-style."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIP(**model_cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".open_clip_model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "open_clip_model.safetensors")
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    if random_init_flag:
        config["panderm_random_init"] = True
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


def demo_model_dir() -> Path:
    folder = cache_root() / f"demo-model-v{DEMO_VERSION}"
    if not (folder / "open_clip_model.safetensors").is_file():
        write_openclip_dir(folder, TINY_MODEL_CFG)
    return folder
