"""Model cards: one record per alias of what the reference did with that model (issue 14 item 5).

A `ModelCard` is to an alias what timm's pretrained config is to a model name: where the weights come from, the
family that loads them, the preprocessing, the feature and precision the reference linear probe used, the image
feature and stochastic depth of the reference finetunes, and anything else the reference treated specially
(docs/REFERENCE.md, "Linear probe", "Multimodal finetune", "Model loading").

`card_for(encoder_or_model_id)` answers these per-model questions for any model: the alias's card, the card of the
model id an alias loads, or, for a model no card describes (a local folder, a user's family), a card derived from
the model id and, when given, the loaded encoder. The derivation is the one place that still reads model names:
a model id naming BiomedCLIP or MONET gets their reference treatment, as the reference keyed it by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ModelError
from ..report import format_table
from .base import Encoder
from .cae_vit import CAEVisionTower

# PanDerm-2's VisionTransformer_FT(drop_path_rate=0.1) in the reference multimodal finetune (docs/REFERENCE.md,
# "Multimodal finetune"); PanDerm v1 and towers that are not CAE run without stochastic depth there.
REFERENCE_CLIP_CAE_DROP_PATH = 0.1

# The loader-table key of an open_clip built-in config name (no prefix): `ViT-L-14-quickgelu` + a pretrained tag.
OPEN_CLIP_CONFIG = "open_clip-config"

PREPROCESSING = ("model", "imagenet")
POOLINGS = ("features", "cls", "mean")


@dataclass(frozen=True)
class ModelCard:
    """What the toolkit and the reference do with one model.

    - ``alias``: the friendly name (`load_encoder(alias)`); empty for a derived card.
    - ``model_id`` / ``pretrained``: what the alias loads (hub target and, for open_clip config names, the tag).
    - ``family``: `Encoder.family` of the loaded model; ``loader``: the key of the loader table
      (`registry.register_family`) that ``model_id`` resolves to; ``cae_tower``: a CAE ViT image tower (PanDerm).
    - ``preprocessing``: ``model`` (the model's own config) or ``imagenet`` (MONET: 224 px bicubic, ImageNet
      mean/std, whatever its config says).
    - ``probe_feature`` / ``probe_normalize`` / ``probe_precision``: the encoder output the reference linear probe
      used, whether it L2-normalised it, and the precision it extracted in (``fp32`` or ``amp``).
    - ``pooling``: the image feature of the reference finetunes: ``mean`` of the patch tokens (PanDerm v1), ``cls``
      (CLIP CAE towers) or the encoder's ``features``.
    - ``drop_path``: the stochastic-depth rate the reference multimodal finetune gives the image tower.
    - ``needs_checkpoint``: weights come from a file the user passes (PanDerm v1's released .pth).
    - ``special``: anything else the reference did differently for this model; ``note``: one line for people.
    """

    alias: str
    model_id: str
    pretrained: str | None = None
    family: str = "open_clip"
    loader: str = "hf-hub:"
    cae_tower: bool = False
    preprocessing: str = "model"
    probe_feature: str = "embed"
    probe_normalize: bool = False
    probe_precision: str = "fp32"
    pooling: str = "features"
    drop_path: float = 0.0
    needs_checkpoint: bool = False
    special: str = ""
    note: str = ""

    @property
    def loads(self) -> str:
        """What the alias loads, as one string."""
        return self.model_id + (f" (pretrained {self.pretrained})" if self.pretrained else "")

    @property
    def reference_feature(self) -> tuple[str, bool]:
        """(kind, L2-normalise) of the reference linear probe."""
        return self.probe_feature, self.probe_normalize

    def row(self) -> dict[str, str]:
        """The card as one row of `format_cards`."""
        feature = self.probe_feature + (" +L2" if self.probe_normalize else "")
        notes = "; ".join(t for t in (self.note, self.special) if t)
        return {"alias": self.alias, "loads": self.loads, "family": self.family + (" (CAE)" if self.cae_tower else ""),
                "probe": f"{feature} {self.probe_precision}", "pooling": self.pooling,
                "drop path": f"{self.drop_path:g}", "preprocessing": self.preprocessing, "notes": notes}


# --------------------------------------------------------------------------------------------------------------
# The table. Helpers per kind of model keep each row to what differs.
# --------------------------------------------------------------------------------------------------------------
def _clip_cae(alias: str, model_id: str, note: str = "") -> ModelCard:
    # CAE towers: the reference probes pooled pre-projection features and finetunes from LN(tokens)[:, 0].
    return ModelCard(alias, model_id, cae_tower=True, probe_feature="features", pooling="cls",
                     drop_path=REFERENCE_CLIP_CAE_DROP_PATH, note=note)


def _clip(alias: str, model_id: str, pretrained: str | None = None, note: str = "", **kw) -> ModelCard:
    # Stock open_clip towers: the reference probes `encode_image`, projected and unnormalised.
    loader = "hf-hub:" if model_id.startswith("hf-hub:") else OPEN_CLIP_CONFIG
    return ModelCard(alias, model_id, pretrained, loader=loader, note=note, **kw)


def _biomedclip(alias: str) -> ModelCard:
    return _clip(alias, "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", probe_normalize=True,
                 special="the reference probes model(x)[0]: projected and L2-normalised")


def _panderm_v1(alias: str, size: str, note: str = "") -> ModelCard:
    return ModelCard(alias, f"panderm-v1-{size}", family="panderm_v1", loader=f"panderm-v1-{size}", cae_tower=True,
                     probe_feature="features", pooling="mean", needs_checkpoint=True,
                     special="finetunes pool the mean of the patch tokens", note=note)


def _vision(alias: str, model_id: str, family: str, note: str = "", special: str = "") -> ModelCard:
    loader = model_id.split(":", 1)[0] + ":"
    return ModelCard(alias, model_id, family=family, loader=loader, probe_feature="features", special=special,
                     note=note)


_MONET_NOTE = "MONET (transformers layout); the OpenAI-format weight_clip.pt loads as its checkpoint"
_V1_NOTE = "PanDerm v1 ViT-{}/16 (checkpoint: the released .pth)"

_TABLE: tuple[ModelCard, ...] = (
    _clip_cae("PanDerm2", "hf-hub:redlessone/PanDerm2", "PanDerm-2: CAE ViT-L/16 + PubMedBERT (768-d)"),
    _clip_cae("DermFM-Zero", "hf-hub:redlessone/DermFM-Zero", "DermFM-Zero (PanDerm-2 successor)"),
    _clip_cae("DermLIP-PanDerm", "hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256",
              "CAE ViT-B/16 + PubMedBERT (512-d)"),
    _clip("DermLIP-B16", "hf-hub:redlessone/DermLIP_ViT-B-16", note="open_clip ViT-B-16 trained on Derm1M"),
    _biomedclip("BiomedCLIP"),
    _clip("CLIP-L14", "ViT-L-14-quickgelu", "openai", note="OpenAI CLIP ViT-L/14 (QuickGELU)"),
    _clip("CLIP-B16", "ViT-B-16-quickgelu", "openai", note="OpenAI CLIP ViT-B/16 (QuickGELU)"),
    ModelCard("MONET", "hf-clip:chanwkim/monet", family="hf_clip", loader="hf-clip:", preprocessing="imagenet",
              probe_precision="amp", note=_MONET_NOTE,
              special="ImageNet mean/std; the reference's clip.load extracts in fp16 on CUDA (amp here)"),
    _panderm_v1("PanDerm-L", "large", _V1_NOTE.format("L")),
    _panderm_v1("PanDerm-B", "base", _V1_NOTE.format("B")),
    _vision("DINOv2-L", "timm:vit_large_patch14_dinov2.lvd142m", "timm"),
    _vision("DINOv2-B", "timm:vit_base_patch14_dinov2.lvd142m", "timm"),
    _vision("DINOv3-L16", "hf-vision:facebook/dinov3-vitl16-pretrain-lvd1689m", "hf_vision",
            "gated on the HF hub; 1024-d CLS"),
    _vision("DINOv3-B16", "hf-vision:facebook/dinov3-vitb16-pretrain-lvd1689m", "hf_vision",
            "gated on the HF hub; 768-d CLS"),
    _vision("DINOv3-7B", "hf-vision:facebook/dinov3-vit7b16-pretrain-lvd1689m", "hf_vision",
            "gated on the HF hub; 4096-d CLS"),
    _vision("ResNet50", "torchvision:resnet50", "torchvision"),
    # Reference linear-probe spellings (docs/REFERENCE.md, "Linear probe").
    _panderm_v1("PanDerm", "large"),
    _biomedclip("biomedclip"),
    _clip("open_clip_vit_large_14", "ViT-L-14-quickgelu", "openai"),
    _clip("open_clip_vit_base_16", "ViT-B-16-quickgelu", "openai"),
    _clip("open_clip_PMC-OA", "hf-hub:ryanyip7777/pmc_vit_l_14"),
    _vision("dinov2", "timm:vit_large_patch14_dinov2.lvd142m", "timm"),
    # The reference probes this model's 512-d head output (its pretrained num_classes), not pooled features.
    _vision("vit-base-16", "timm:vit_base_patch16_clip_224.openai+head", "timm",
            special="the reference probes the pretrained 512-d head output"),
    # Reference multimodal-finetune spellings (docs/REFERENCE.md, "Multimodal finetune").
    _panderm_v1("PanDerm-Large", "large", _V1_NOTE.format("L")),
    _panderm_v1("PanDerm-Base", "base", _V1_NOTE.format("B")),
    ModelCard("demo", "demo", loader="demo", note="tiny random-weight model built on the fly (demos and tests)"),
)

# Every card by alias, in table order (the order the models command lists them).
CARDS: dict[str, ModelCard] = {card.alias: card for card in _TABLE}
_BY_ALIAS = {name.lower(): card for name, card in CARDS.items()}
_BY_MODEL_ID: dict[str, ModelCard] = {}
for _card in _TABLE:
    _BY_MODEL_ID.setdefault(_card.model_id, _card)


def add_card(card: ModelCard, replace: bool = False) -> None:
    """Make `card.alias` an alias of `load_encoder` and a row of `list_cards` (a user's own models)."""
    if not card.alias:
        raise ModelError("a model card needs an alias")
    if card.alias.lower() in _BY_ALIAS and not replace:
        raise ModelError(f"alias {card.alias!r} already has a card; pass replace=True to change it")
    CARDS[card.alias] = card
    _BY_ALIAS[card.alias.lower()] = card
    _BY_MODEL_ID.setdefault(card.model_id, card)


def canonical_id(model_id: str) -> str:
    """The model id without the reference linear probe's `open_clip_` spelling (`open_clip_<open_clip id>`)."""
    if model_id.startswith("open_clip_") and model_id != "open_clip_":
        return model_id[len("open_clip_"):]
    return model_id


def alias_card(model_id: str) -> ModelCard | None:
    """The card of an alias (case-insensitive; an exact spelling first: `BiomedCLIP` and `biomedclip` are two), or
    None."""
    return CARDS.get(model_id) or _BY_ALIAS.get(model_id.lower())


def card_for(model: Encoder | str) -> ModelCard:
    """The card that answers the per-model questions for an alias, a model id or a loaded `Encoder`.

    For a loaded encoder the card of its model id is used when it describes the model that was loaded (same
    family, same kind of tower); otherwise, as for any model without a card, the card is derived from the
    model id and the encoder itself.
    """
    if isinstance(model, str):
        card = alias_card(model.strip())
        if card is not None:
            return card
        target = canonical_id(model.strip())
        return _BY_MODEL_ID.get(target) or _derived(target, None)
    card = _BY_MODEL_ID.get(model.model_id)
    if card is not None and card.family == model.family and card.cae_tower == (cae_tower(model) is not None):
        return card
    return _derived(model.model_id, model)


def cae_tower(encoder) -> CAEVisionTower | None:
    """The CAE tower inside `encoder` (PanDerm v1, or a CLIP model's CAE visual), else None."""
    tower = getattr(encoder, "tower", None)
    if tower is None:
        visual = getattr(getattr(encoder, "model", None), "visual", None)
        tower = getattr(visual, "trunk", visual)
    return tower if isinstance(tower, CAEVisionTower) else None


def _derived(model_id: str, encoder: Encoder | None) -> ModelCard:
    """A card for a model no card describes: what the reference did with a model of its family and name."""
    name = model_id.lower()
    # The reference keyed these two by name (docs/REFERENCE.md, "Linear probe", "Model loading").
    biomedclip, monet = "biomedclip" in name, "monet" in name
    card = ModelCard("", model_id, family="", loader="", preprocessing="imagenet" if monet else "model",
                     probe_precision="amp" if monet else "fp32")
    if encoder is None:
        return card
    family, tower = encoder.family, cae_tower(encoder)
    if family == "open_clip":
        if getattr(encoder, "layout", None):
            feature, normalize = "features", False  # CAE towers: pooled pre-projection
        else:
            feature, normalize = "embed", biomedclip  # BiomedCLIP: model(x)[0], normalised projected features
    elif family == "hf_clip":
        feature, normalize = "embed", False
    else:
        feature, normalize = "features", False  # PanDerm v1 CLS, timm / torchvision / transformers pooled
    if "tokens" not in encoder.image_kinds or tower is None:
        pooling = "features"
    else:
        pooling = "mean" if family == "panderm_v1" else "cls"
    drop_path = 0.0 if tower is None or family == "panderm_v1" else REFERENCE_CLIP_CAE_DROP_PATH
    return dataclasses.replace(card, family=family, cae_tower=tower is not None, probe_feature=feature,
                               probe_normalize=normalize, pooling=pooling, drop_path=drop_path)


def list_cards(filter: str | None = None) -> list[ModelCard]:  # noqa: A002 - the name users type
    """Every card in table order, or those whose alias, target, family or notes hold `filter` (any case)."""
    wanted = (filter or "").lower()
    return [c for c in CARDS.values()
            if wanted in " ".join((c.alias, c.loads, c.family, c.note, c.special)).lower()]


def format_cards(cards: list[ModelCard] | None = None) -> str:
    """The cards as a plain-text table (all of them when `cards` is None)."""
    rows = [c.row() for c in (list_cards() if cards is None else cards)]
    return format_table(rows) if rows else "(no model cards)"


__all__ = ["ModelCard", "CARDS", "REFERENCE_CLIP_CAE_DROP_PATH", "OPEN_CLIP_CONFIG", "add_card", "alias_card",
           "canonical_id", "card_for", "cae_tower", "list_cards", "format_cards"]
