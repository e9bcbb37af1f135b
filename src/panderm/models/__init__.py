"""Encoders: one interface for every model family (see `base.Encoder`), one card per model alias (`cards`)."""
from .base import KINDS, Encoder, PreprocessSpec, REFERENCE_LP_PREPROCESS, l2_normalize
from .cards import CARDS, ModelCard, add_card, card_for, format_cards, list_cards
from .registry import ALIASES, LoadRequest, load_encoder, model_short_name, register_family, resolve_alias

__all__ = [
    "KINDS",
    "Encoder",
    "PreprocessSpec",
    "REFERENCE_LP_PREPROCESS",
    "l2_normalize",
    "ALIASES",
    "CARDS",
    "ModelCard",
    "LoadRequest",
    "add_card",
    "card_for",
    "format_cards",
    "list_cards",
    "load_encoder",
    "model_short_name",
    "register_family",
    "resolve_alias",
]
