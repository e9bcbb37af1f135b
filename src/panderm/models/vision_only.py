"""Vision-only backbones: PanDerm v1 (.pth), timm models by name, torchvision ResNets.

They have no text tower and no joint space, so `embed` equals `features`.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .cae_vit import CAEConfig, CAEVisionTower, sincos_pos_embed
from .checkpoints import load_strict, read_state_dict, strip_prefix

# PanDerm v1's evaluation transform with the correct ImageNet std; the reference
# door swaps in REFERENCE_LP_PREPROCESS (std 0.228).
V1_PREPROCESS = PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", resize_to=256)
V1_SIZES = {"large": (1024, 24), "base": (768, 12)}


class PanDermV1Encoder(Encoder):
    """PanDerm v1 ViT-L/16 or ViT-B/16; the linear-probe feature is CLS after the final LayerNorm."""

    family = "panderm_v1"
    embed_is_features = True  # no joint space

    def __init__(self, tower: CAEVisionTower, model_id: str, checkpoint: str | None, random_init: bool):
        extra = {"checkpoint": Path(checkpoint).name if checkpoint else None}
        super().__init__(model_id, V1_PREPROCESS, None, random_init=random_init, extra=extra)
        self.tower = tower

    def _image(self, x, kind):
        if kind == "tokens":
            return self.tower.tokens(x)
        return self.tower.features(x)


def load_panderm_v1(size: str, checkpoint: str | None, allow_random_init: bool = False) -> PanDermV1Encoder:
    width, depth = V1_SIZES[size]
    model_id = f"panderm-v1-{size}"
    if checkpoint is None:
        if not allow_random_init:
            raise ModelError(f"{model_id} needs a checkpoint: the released .pth file", param="checkpoint")
        cfg = CAEConfig(width, depth, width // 64, 16, 224, 4 * width, None)
        encoder = PanDermV1Encoder(CAEVisionTower(cfg, pooling="cls"), model_id, None, True)
        encoder.model_config = {"tower": cfg, "pooling": "cls"}
        return encoder
    sd = read_state_dict(checkpoint)
    if any(k.startswith("encoder.") for k in sd):
        # Released files also hold decoder / regressor / teacher weights: keep the encoder only.
        sd = strip_prefix(sd, "encoder.")
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    try:
        cfg = CAEConfig.from_state_dict(sd)
    except ModelError as exc:
        raise ModelError(f"{checkpoint}: {exc}") from exc
    cfg = CAEConfig(cfg.width, cfg.depth, cfg.heads, cfg.patch_size, cfg.image_size, cfg.mlp_hidden, None)
    if (cfg.width, cfg.depth) != (width, depth) and not _is_reduced_test_tower(cfg):
        raise ModelError(
            f"{checkpoint} holds a ViT with width {cfg.width} and depth {cfg.depth}, not PanDerm v1 {size} "
            f"({width}, {depth})"
        )
    if "pos_embed" not in sd:
        # The fixed sin-cos table is fully determined by the grid; older files omit it.
        sd["pos_embed"] = sincos_pos_embed(cfg.image_size // cfg.patch_size, cfg.width)
    tower = CAEVisionTower(cfg, pooling="cls")
    load_strict(tower, sd, checkpoint)
    encoder = PanDermV1Encoder(tower.eval(), model_id, checkpoint, False)
    encoder.model_config = {"tower": cfg, "pooling": "cls"}
    return encoder


def _is_reduced_test_tower(cfg: CAEConfig) -> bool:
    # Reduced-size towers (tests, demos) are accepted whatever the alias says.
    return cfg.width < 256


class TimmEncoder(Encoder):
    family = "timm"
    embed_is_features = True  # no joint space

    def __init__(self, model: nn.Module, model_id: str, spec: PreprocessSpec, random_init: bool, checkpoint):
        super().__init__(model_id, spec, None, random_init=random_init, extra={"checkpoint": checkpoint})
        self.model = model

    def _image(self, x, kind):
        if kind == "tokens":
            out = self.model.forward_features(x)
            if out.ndim != 3:
                raise ModelError(f"{self.model_id} gives a feature map, not tokens")
            return out
        return self.model(x)


def _create_timm(name: str, pretrained: bool, keep_head: bool):
    import timm

    kwargs = {} if keep_head else {"num_classes": 0}
    try:
        # ViTs accept any input size (position embeddings interpolated), so a model built at 518 px
        # (DINOv2) still runs under the reference's 224-px linear-probe transform.
        return timm.create_model(name, pretrained=pretrained, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(name, pretrained=pretrained, **kwargs)


def load_timm(name: str, checkpoint: str | None, allow_random_init: bool = False) -> TimmEncoder:
    """`timm:NAME` (pooled features, head removed) or `timm:NAME+head` (the pretrained head's output)."""
    import timm

    keep_head = name.endswith("+head")
    name = name[: -len("+head")] if keep_head else name
    use_hub = checkpoint is None and not allow_random_init
    try:
        model = _create_timm(name, use_hub, keep_head)
    except RuntimeError as exc:
        raise ModelError(f"timm:{name}: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:
        if "Unknown model" in str(exc):
            raise ModelError(f"timm:{name}: unknown timm model") from exc
        raise ModelError(f"timm:{name}: cannot load pretrained weights (offline?): {str(exc).splitlines()[0]}") from exc
    if checkpoint is not None:
        sd = read_state_dict(checkpoint)
        # Classifier heads of the source task are not part of a num_classes=0 backbone.
        if not keep_head:
            sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc.", "classifier."))}
        load_strict(model, sd, checkpoint)
    cfg = timm.data.resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    crop = float(cfg.get("crop_pct", 1.0) or 1.0)
    spec = PreprocessSpec(
        size=size,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
        resize_to=int(size / crop) if crop < 1 else None,
    )
    encoder = TimmEncoder(model.eval(), f"timm:{name}", spec, checkpoint is None and allow_random_init, checkpoint)
    encoder.model_config = {"name": name, "keep_head": keep_head, "data_config": cfg,
                            "pretrained_cfg": getattr(model, "pretrained_cfg", None)}
    return encoder


class TorchvisionEncoder(Encoder):
    family = "torchvision"
    embed_is_features = True  # no joint space
    image_kinds = ("embed", "features")

    def __init__(self, model: nn.Module, model_id: str, random_init: bool, checkpoint):
        spec = PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", resize_to=256)
        super().__init__(model_id, spec, None, random_init=random_init, extra={"checkpoint": checkpoint})
        self.model = model

    def _image(self, x, kind):
        return self.model(x)


def load_torchvision(name: str, checkpoint: str | None, allow_random_init: bool = False) -> TorchvisionEncoder:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise ModelError(f"torchvision:{name}: unknown torchvision model") from exc
    weights = None
    if checkpoint is None and not allow_random_init:
        weights = "DEFAULT"
    try:
        model = builder(weights=weights)
    except Exception as exc:
        raise ModelError(f"torchvision:{name}: cannot download weights (offline?); give a checkpoint file",
                         param="checkpoint") from exc
    if hasattr(model, "fc"):
        model.fc = nn.Identity()  # before loading: self-supervised checkpoints have no ImageNet classifier
    if checkpoint is not None:
        sd = {k: v for k, v in read_state_dict(checkpoint).items() if not k.startswith("fc.")}
        load_strict(model, sd, checkpoint)
    encoder = TorchvisionEncoder(model.eval(), f"torchvision:{name}", checkpoint is None and allow_random_init,
                                 checkpoint)
    encoder.model_config = {"name": name, "fc": "Identity" if hasattr(model, "fc") else None}
    return encoder
