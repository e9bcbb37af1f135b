"""Model ids → encoders.

`load_encoder(model_id)` accepts:
- a friendly alias (see `ALIASES`, case-insensitive),
- `hf-hub:ORG/NAME[@REV]` and `local-dir:PATH` (open_clip layout),
- an open_clip config name plus a weights file or tag (`checkpoint=`),
- `hf-clip:ORG/NAME` (transformers CLIPModel layout, e.g. MONET),
- `hf-vision:ORG/NAME` or `hf-vision:FOLDER` (a transformers vision backbone, e.g. DINOv3; pooler output),
- `timm:NAME`, `torchvision:NAME`, `panderm-v1-large|base` (needs `checkpoint=`),
- `demo` (a tiny random-weight open_clip model built on the fly; outputs say so),
- any family added with `register_family(prefix, loader)`.

Each family is one entry of a loader table (prefix → loader); what the reference did with each alias is its
`ModelCard` (models/cards.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .cards import CARDS, OPEN_CLIP_CONFIG, ModelCard, alias_card, canonical_id, card_for
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .demo import demo_model_dir
from .hf_clip import load_hf_clip
from .hf_vision import load_hf_vision
from .openclip_family import load_openclip
from .vision_only import load_panderm_v1, load_timm, load_torchvision


@dataclass(frozen=True)
class Alias:
    model_id: str
    pretrained: str | None = None
    note: str = ""


def _alias(card: ModelCard) -> Alias:
    return Alias(card.model_id, card.pretrained, card.note)


# The aliases as (target, tag, note), kept for existing importers; the cards (models/cards.py) are the source.
ALIASES: dict[str, Alias] = {name: _alias(card) for name, card in CARDS.items() if name != "demo"}


# MONET's OpenAI-format state dict (`weight_clip.pt`) is a CLIP ViT-L/14 with QuickGELU.
MONET_OPENAI_CONFIG = "ViT-L-14-quickgelu"


def resolve_alias(model_id: str) -> Alias:
    """The canonical id for an alias, or `model_id` itself."""
    card = alias_card(model_id)
    return _alias(card) if card is not None else Alias(canonical_id(model_id))


def model_short_name(model_id: str) -> str:
    """Last path component, as the reference names per-model files (`PanDerm2.csv`)."""
    return model_id.rstrip("/").split("/")[-1].split(":")[-1].split("@")[0]


def _unknown(model_id: str) -> ModelError:
    names = ", ".join(sorted(ALIASES)[:12])
    return ModelError(
        f"unknown model id {model_id!r}: use an alias ({names}, ...), hf-hub:ORG/NAME, local-dir:PATH, "
        "hf-clip:ORG/NAME, timm:NAME, torchvision:NAME, an open_clip config name with a checkpoint, or 'demo'"
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
    card = card_for(model_id.strip())
    alias = resolve_alias(model_id.strip())
    target, pretrained = alias.model_id, checkpoint or alias.pretrained
    encoder = _build(target, pretrained, checkpoint, allow_random_init, model_id, card)
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
                "use the model's own preprocessing", param="model_preprocess") from None
    return encoder


def _is_tag(model_id: str, checkpoint: str) -> bool:
    # model ViT-L-14 with pretrained "openai": a tag, not a path.
    return "/" not in checkpoint and "." not in checkpoint


def _device(device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("a CUDA device was asked for but none is available", param="device")
    return dev


@dataclass(frozen=True)
class LoadRequest:
    """What a family loader is given: `name` is the model id after the family's prefix (`ViT-B-16` for
    `toy:ViT-B-16`); `target` the whole id an alias resolved to; `pretrained` the checkpoint or the alias's
    pretrained tag; `original` the id as the caller wrote it (for messages); `card` the model's card."""

    name: str
    target: str
    checkpoint: str | None
    pretrained: str | None
    allow_random_init: bool
    original: str
    card: ModelCard


Loader = Callable[[LoadRequest], Encoder]

# Loader-table key → loader. A key ending in ':' is a prefix; any other key is one whole model id.
_FAMILIES: dict[str, Loader] = {}


def register_family(prefix: str, loader: Loader, replace: bool = False) -> None:
    """Teach `load_encoder` a model family.

    `prefix` is a scheme ending in ':' (`"toy:"` makes `load_encoder("toy:small")` call the loader with
    `request.name == "small"`) or one whole model id (`"panderm-v1-large"`); the longest matching key wins.
    `loader(request: LoadRequest) -> Encoder` builds the model (on the CPU; `load_encoder` moves it and sets eval
    mode): a subclass of `panderm.models.Encoder` that sets `family`, implements `_image(x, kind)` (and `_text`
    for a text tower) and says whether `embed` is `features` (`embed_is_features`). Give the family's models
    aliases and reference answers with `add_card(ModelCard(alias, "toy:small", family=..., loader="toy:"))`.
    An existing key is only replaced with `replace=True`.
    """
    if not prefix or not prefix.strip() or prefix != prefix.strip():
        raise ModelError(f"a family prefix must be a non-empty id or scheme without spaces, got {prefix!r}")
    if not callable(loader):
        raise ModelError(f"the loader for {prefix!r} is not callable: {loader!r}")
    if prefix in _FAMILIES and not replace:
        raise ModelError(f"model family {prefix!r} is already registered; pass replace=True to change its loader")
    _FAMILIES[prefix] = loader


def unregister_family(prefix: str) -> None:
    """Forget a family added with `register_family` (tests, notebooks)."""
    _FAMILIES.pop(prefix, None)


def loader_key(target: str) -> str:
    """The loader-table key that `target` resolves to (`OPEN_CLIP_CONFIG` for everything else: an open_clip
    config name or a folder in the open_clip layout)."""
    if target in _FAMILIES:
        return target
    keys = [k for k in _FAMILIES if k.endswith(":") and target.startswith(k)]
    return max(keys, key=len) if keys else OPEN_CLIP_CONFIG


def _build(target: str, pretrained: str | None, checkpoint: str | None, allow_random_init: bool, original: str,
           card: ModelCard) -> Encoder:
    key = loader_key(target)
    name = target[len(key):] if key.endswith(":") else ""
    request = LoadRequest(name, target, checkpoint, pretrained, allow_random_init, original, card)
    return _FAMILIES.get(key, _load_open_clip_config)(request)


# --- built-in families -------------------------------------------------------------------------------------------
def _load_demo(req: LoadRequest) -> Encoder:
    if req.checkpoint is not None:
        raise ModelError(f"{req.original}: the demo model is built on the fly; a checkpoint is not used",
                         param="checkpoint", drop=True)
    encoder = load_openclip(f"local-dir:{demo_model_dir()}", allow_random_init=True)
    encoder.model_id = "demo"
    return encoder


def _load_open_clip_hub(req: LoadRequest) -> Encoder:
    return load_openclip(req.target, pretrained=req.checkpoint, allow_random_init=req.allow_random_init)


def _load_hf_clip(req: LoadRequest) -> Encoder:
    checkpoint = req.checkpoint
    imagenet = req.card.preprocessing == "imagenet"
    if checkpoint and Path(checkpoint).expanduser().is_file():
        # MONET's OpenAI-format state dict loads into open_clip's ViT-L/14 (QuickGELU).
        encoder = load_openclip(MONET_OPENAI_CONFIG, pretrained=checkpoint)
    elif checkpoint and checkpoint != "openai":
        raise ModelError(f"{req.original}: the checkpoint must be a weights file (or 'openai' as the reference), "
                         f"got {checkpoint!r}", param="checkpoint")
    else:
        encoder = load_hf_clip(req.name, monet_preprocess=imagenet)
    if imagenet:
        encoder.set_preprocess(PreprocessSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    return encoder


def _load_hf_vision(req: LoadRequest) -> Encoder:
    if req.checkpoint is not None:
        raise ModelError(f"{req.original}: weights come from the repository or folder; a checkpoint is not used",
                         param="checkpoint", drop=True)
    return load_hf_vision(req.name)


def _load_timm(req: LoadRequest) -> Encoder:
    return load_timm(req.name, req.checkpoint, req.allow_random_init)


def _load_torchvision(req: LoadRequest) -> Encoder:
    return load_torchvision(req.name, req.checkpoint, req.allow_random_init)


def _load_panderm_v1(req: LoadRequest) -> Encoder:
    return load_panderm_v1(req.target.rsplit("-", 1)[1], req.checkpoint, req.allow_random_init)


def _load_open_clip_config(req: LoadRequest) -> Encoder:
    """No family key matched: an open_clip built-in config name, or a folder in the open_clip layout."""
    # open_clip's import costs about as much as torch's: only config names need it here.
    import open_clip

    target, pretrained, allow_random_init = req.target, req.pretrained, req.allow_random_init
    if open_clip.get_model_config(target) is not None:
        if pretrained is None and not allow_random_init:
            raise ModelError(f"{target}: give the weights as a checkpoint file or a pretrained tag",
                             param="checkpoint")
        return load_openclip(target, pretrained=pretrained, allow_random_init=allow_random_init)
    if Path(target).expanduser().is_dir() and (Path(target).expanduser() / "open_clip_config.json").is_file():
        return load_openclip(f"local-dir:{target}", pretrained=req.checkpoint, allow_random_init=allow_random_init)
    raise _unknown(req.original)


for _key, _loader in (("demo", _load_demo), ("hf-hub:", _load_open_clip_hub), ("local-dir:", _load_open_clip_hub),
                      ("hf-clip:", _load_hf_clip), ("hf-vision:", _load_hf_vision), ("timm:", _load_timm),
                      ("torchvision:", _load_torchvision), ("panderm-v1-large", _load_panderm_v1),
                      ("panderm-v1-base", _load_panderm_v1)):
    register_family(_key, _loader)
