"""Vision backbones in the Hugging Face transformers layout (`hf-vision:ORG/NAME` or a folder), e.g. DINOv3.

The reference loads DINOv3 with ``transformers.AutoModel.from_pretrained(...)`` and probes
``model(x)['pooler_output']`` (the CLS token after the final norm: 1024-d for ViT-L/16, 4096-d for
ViT-7B/16). Any AutoModel vision backbone with a ``pixel_values`` input works the same way (DINOv2,
DINO ViT, ...). The model's own preprocessing comes from its ``preprocessor_config.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .hub import cache_only_for, is_cached, not_cached_message

log = logging.getLogger(__name__)

# PIL resampling codes as image processors store them.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


class HFVisionEncoder(Encoder):
    family = "hf_vision"
    embed_is_features = True  # no joint space

    def __init__(self, model, model_id: str, spec: PreprocessSpec):
        super().__init__(model_id, spec, None, random_init=False)
        self.model = model

    def _image(self, x, kind):
        out = self.model(pixel_values=x)
        if kind == "tokens":
            return out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        # Backbones without a pooler: the first token after the final norm, which is what DINO poolers return.
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


def preprocess_from_config(cfg: dict, default_size: int) -> PreprocessSpec:
    """The evaluation transform an image-processor config describes (resize, crop, mean/std, resampling)."""
    size = cfg.get("size") or {}
    crop = cfg.get("crop_size") or {}
    mean = tuple(float(v) for v in cfg.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("image_std", IMAGENET_STD))
    resample = cfg.get("resample")
    interpolation = _RESAMPLE.get(resample, "bicubic")
    if resample is not None and resample not in _RESAMPLE:
        log.warning("resampling code %s of the image processor is not supported; using bicubic", resample)
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if isinstance(size, int):
        # transformers' rule: an int size is a square resize unless the processor says default_to_square=False.
        size = {"height": size, "width": size} if cfg.get("default_to_square", True) else {"shortest_edge": size}
    if "shortest_edge" in size:
        short = int(size["shortest_edge"])
        do_crop = cfg.get("do_center_crop")
        do_crop = bool(crop) if do_crop is None else do_crop
        out = int(crop.get("height", short)) if do_crop else short
        return PreprocessSpec(size=out, mean=mean, std=std, interpolation=interpolation, resize_to=short)
    if "height" in size and "width" in size:
        if int(size["height"]) != int(size["width"]):
            raise ModelError(f"non-square input size {size} is not supported")
        return PreprocessSpec(size=int(size["height"]), mean=mean, std=std, interpolation=interpolation,
                              resize_mode="squash")
    return PreprocessSpec(size=default_size, mean=mean, std=std, interpolation=interpolation, resize_mode="squash")


def _read_processor_config(repo: str) -> dict:
    folder = Path(repo).expanduser()
    if folder.is_dir():
        path = folder / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(repo, "preprocessor_config.json",
                                               local_files_only=cache_only_for(repo))).read_text())
    except EntryNotFoundError:
        log.warning("hf-vision:%s has no preprocessor_config.json (or it is not in the offline cache): using a "
                    "square resize to the model's image size with ImageNet mean/std", repo)
        return {}


def _load_error(repo: str, exc: Exception) -> ModelError:
    text = str(exc)
    if "gated" in text.lower() or "401" in text or "403" in text:
        return ModelError(f"hf-vision:{repo} is a gated repository: accept its licence on huggingface.co, log in "
                          "(`hf auth login`), or pass a local folder (hf-vision:/path/to/folder)")
    return ModelError(f"hf-vision:{repo}: {text.splitlines()[0] if text else type(exc).__name__}")


def load_hf_vision(repo: str) -> HFVisionEncoder:
    from transformers import AutoModel

    local = cache_only_for(repo)  # an unreachable hub: the local cache only, without transformers' retries
    try:
        model, info = AutoModel.from_pretrained(repo, output_loading_info=True, local_files_only=local)
        processor_cfg = _read_processor_config(repo)
    except (OSError, ValueError) as exc:
        if local and not is_cached(repo):
            raise ModelError(not_cached_message(f"hf-vision:{repo}")) from exc
        raise _load_error(repo, exc) from exc
    missing, unexpected = list(info.get("missing_keys", [])), list(info.get("unexpected_keys", []))
    if missing or unexpected:
        # A checkpoint that leaves weights at random init would give plausible-looking but meaningless features.
        raise ModelError(f"hf-vision:{repo}: weights do not match {type(model).__name__} "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    default = int(getattr(model.config, "image_size", 224) or 224)
    spec = preprocess_from_config(processor_cfg, default)
    encoder = HFVisionEncoder(model.eval(), f"hf-vision:{repo}", spec)
    encoder.model_config = {"config": model.config.to_dict(), "preprocessor_config": processor_cfg}
    return encoder
