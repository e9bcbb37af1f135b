"""Model ids → encoders.

`load_encoder(model_id)` accepts:
- a friendly alias (see `ALIASES`, case-insensitive),
- `hf-hub:ORG/NAME[@REV]` and `local-dir:PATH` (open_clip layout),
- an open_clip config name plus a weights file or tag (`checkpoint=`),
- `hf-clip:ORG/NAME` (transformers CLIPModel layout, e.g. MONET),
- `hf-vision:ORG/NAME` or `hf-vision:FOLDER` (a transformers vision backbone, e.g. DINOv3; pooler output),
- `timm:NAME`, `torchvision:NAME`, `panderm-v1-large|base` (needs `checkpoint=`),
- `demo` (a tiny random-weight open_clip model built on the fly; outputs say so).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .constants import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Alias:
    model_id: str
    pretrained: str | None = None
    note: str = ""


ALIASES: dict[str, Alias] = {
    "PanDerm2": Alias("hf-hub:redlessone/PanDerm2", note="PanDerm-2: CAE ViT-L/16 + PubMedBERT (768-d)"),
    "DermFM-Zero": Alias("hf-hub:redlessone/DermFM-Zero", note="DermFM-Zero (PanDerm-2 successor)"),
    "DermLIP-PanDerm": Alias("hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256", note="CAE ViT-B/16 + PubMedBERT (512-d)"),
    "DermLIP-B16": Alias("hf-hub:redlessone/DermLIP_ViT-B-16", note="open_clip ViT-B-16 trained on Derm1M"),
    "BiomedCLIP": Alias("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
    "CLIP-L14": Alias("ViT-L-14-quickgelu", "openai", note="OpenAI CLIP ViT-L/14 (QuickGELU)"),
    "CLIP-B16": Alias("ViT-B-16-quickgelu", "openai", note="OpenAI CLIP ViT-B/16 (QuickGELU)"),
    "MONET": Alias("hf-clip:chanwkim/monet", note="MONET (transformers layout); --checkpoint weight_clip.pt for the OpenAI format"),
    "PanDerm-L": Alias("panderm-v1-large", note="PanDerm v1 ViT-L/16 (--checkpoint .pth)"),
    "PanDerm-B": Alias("panderm-v1-base", note="PanDerm v1 ViT-B/16 (--checkpoint .pth)"),
    "DINOv2-L": Alias("timm:vit_large_patch14_dinov2.lvd142m"),
    "DINOv2-B": Alias("timm:vit_base_patch14_dinov2.lvd142m"),
    "DINOv3-L16": Alias("hf-vision:facebook/dinov3-vitl16-pretrain-lvd1689m", note="gated on the HF hub; 1024-d CLS"),
    "DINOv3-B16": Alias("hf-vision:facebook/dinov3-vitb16-pretrain-lvd1689m", note="gated on the HF hub; 768-d CLS"),
    "DINOv3-7B": Alias("hf-vision:facebook/dinov3-vit7b16-pretrain-lvd1689m", note="gated on the HF hub; 4096-d CLS"),
    "ResNet50": Alias("torchvision:resnet50"),
    # Reference linear-probe spellings (linear_probe/models/builder.py).
    "PanDerm": Alias("panderm-v1-large"),
    "biomedclip": Alias("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
    "open_clip_vit_large_14": Alias("ViT-L-14-quickgelu", "openai"),
    "open_clip_vit_base_16": Alias("ViT-B-16-quickgelu", "openai"),
    "open_clip_PMC-OA": Alias("hf-hub:ryanyip7777/pmc_vit_l_14"),
    "dinov2": Alias("timm:vit_large_patch14_dinov2.lvd142m"),
    # The reference probes this model's 512-d head output (its pretrained num_classes), not pooled features.
    "vit-base-16": Alias("timm:vit_base_patch16_clip_224.openai+head"),
    # Reference multimodal-finetune spellings (multimodal_finetune/models/PanDermFormer.py).
    "PanDerm-Large": Alias("panderm-v1-large", note="PanDerm v1 ViT-L/16 (--checkpoint .pth)"),
    "PanDerm-Base": Alias("panderm-v1-base", note="PanDerm v1 ViT-B/16 (--checkpoint .pth)"),
}
_ALIAS_LOOKUP = {k.lower(): v for k, v in ALIASES.items()}


# MONET's OpenAI-format state dict (`weight_clip.pt`) is a CLIP ViT-L/14 with QuickGELU.
MONET_OPENAI_CONFIG = "ViT-L-14-quickgelu"


def resolve_alias(model_id: str) -> Alias:
    """The canonical id for an alias, or `model_id` itself."""
    alias = _ALIAS_LOOKUP.get(model_id.lower())
    if alias is not None:
        return alias
    if model_id.startswith("open_clip_") and model_id != "open_clip_":
        # Reference LP form: open_clip_<any open_clip id>.
        return Alias(model_id[len("open_clip_"):])
    return Alias(model_id)


def model_short_name(model_id: str) -> str:
    """Last path component, as the reference names per-model files (`PanDerm2.csv`)."""
    return model_id.rstrip("/").split("/")[-1].split(":")[-1].split("@")[0]


def _unknown(model_id: str) -> ModelError:
    names = ", ".join(sorted(ALIASES)[:12])
    return ModelError(
        f"unknown model id {model_id!r}: use an alias ({names}, ...), hf-hub:ORG/NAME, local-dir:PATH, "
        "hf-clip:ORG/NAME, timm:NAME, torchvision:NAME, an open_clip config name with --checkpoint, or 'demo'"
    )


def load_encoder(
    model_id: str,
    checkpoint: str | None = None,
    device: str | torch.device = "cpu",
    allow_random_init: bool = False,
    preprocess: PreprocessSpec | None = None,
) -> Encoder:
    """Load any supported model as an `Encoder` in eval mode on `device`."""
    if not model_id or not model_id.strip():
        raise ModelError("no model id given")
    if checkpoint is not None and not Path(checkpoint).expanduser().exists() and not _is_tag(model_id, checkpoint):
        raise ModelError(f"checkpoint file not found: {checkpoint}")
    alias = resolve_alias(model_id.strip())
    target, pretrained = alias.model_id, checkpoint or alias.pretrained
    encoder = _build(target, pretrained, checkpoint, allow_random_init, original=model_id)
    own_size = encoder.preprocess_spec.size
    if preprocess is not None:
        encoder.set_preprocess(preprocess)
    encoder = encoder.to(_device(device)).eval()
    if preprocess is not None and preprocess.size != own_size:
        # CNNs and ViTs built with interpolated position embeddings (timm dynamic_img_size, DINOv3's RoPE)
        # take any size; the others (open_clip, CAE/PanDerm, HF CLIP) have a fixed grid. One dummy forward
        # at the override's size tells which, before a run fails mid-extraction with a raw shape error.
        kind = "features" if "features" in encoder.image_kinds else encoder.image_kinds[0]
        size = preprocess.size
        try:
            with torch.inference_mode():
                encoder.encode_image(torch.zeros(1, 3, size, size, device=encoder.device), kind)
        except Exception:
            raise ModelError(
                f"{model_id} takes {own_size}-px input (fixed size) but the preprocessing override crops {size} px; "
                "use the model's own preprocessing: drop --reference-preprocess (panderm linear-probe) or add "
                "--model_preprocess (linear_probe/linear_eval.py)") from None
    return encoder


def _is_tag(model_id: str, checkpoint: str) -> bool:
    # `--model ViT-L-14 --pretrained openai`: a tag, not a path.
    return "/" not in checkpoint and "." not in checkpoint


def _device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA device is available")
    return dev


def _build(target: str, pretrained: str | None, checkpoint: str | None, allow_random_init: bool, original: str) -> Encoder:
    from .openclip_family import load_openclip

    if target == "demo":
        from .demo import demo_model_dir

        if checkpoint is not None:
            raise ModelError(f"{original}: the demo model is built on the fly; --checkpoint is not used")
        encoder = load_openclip(f"local-dir:{demo_model_dir()}", allow_random_init=True)
        encoder.model_id = "demo"
        return encoder
    if target.startswith(("hf-hub:", "local-dir:")):
        return load_openclip(target, pretrained=checkpoint, allow_random_init=allow_random_init)
    if target.startswith("hf-clip:"):
        from .hf_clip import load_hf_clip

        if checkpoint and Path(checkpoint).expanduser().is_file():
            # MONET's OpenAI-format state dict loads into open_clip's ViT-L/14 (QuickGELU).
            encoder = load_openclip(MONET_OPENAI_CONFIG, pretrained=checkpoint)
        elif checkpoint and checkpoint != "openai":
            raise ModelError(f"{original}: --checkpoint must be a weights file (or 'openai' as the reference), got {checkpoint!r}")
        else:
            encoder = load_hf_clip(target[len("hf-clip:"):], monet_preprocess="monet" in target.lower())
        if "monet" in target.lower():
            encoder.set_preprocess(PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD))
        return encoder
    if target.startswith("hf-vision:"):
        from .hf_vision import load_hf_vision

        if checkpoint is not None:
            raise ModelError(f"{original}: weights come from the repository or folder; --checkpoint is not used")
        return load_hf_vision(target[len("hf-vision:"):])
    if target.startswith("timm:"):
        from .vision_only import load_timm

        return load_timm(target[len("timm:"):], checkpoint, allow_random_init)
    if target.startswith("torchvision:"):
        from .vision_only import load_torchvision

        return load_torchvision(target[len("torchvision:"):], checkpoint, allow_random_init)
    if target in ("panderm-v1-large", "panderm-v1-base"):
        from .vision_only import load_panderm_v1

        return load_panderm_v1(target.rsplit("-", 1)[1], checkpoint, allow_random_init)
    import open_clip

    if open_clip.get_model_config(target) is not None:
        if pretrained is None and not allow_random_init:
            raise ModelError(f"{target}: give the weights with --checkpoint/--pretrained FILE or a pretrained tag")
        return load_openclip(target, pretrained=pretrained, allow_random_init=allow_random_init)
    if Path(target).expanduser().is_dir() and (Path(target).expanduser() / "open_clip_config.json").is_file():
        return load_openclip(f"local-dir:{target}", pretrained=checkpoint, allow_random_init=allow_random_init)
    raise _unknown(original)
