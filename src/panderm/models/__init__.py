"""Encoders: one interface for every model family (see `base.Encoder`)."""
from .base import KINDS, Encoder, PreprocessSpec, REFERENCE_LP_PREPROCESS, l2_normalize
from .registry import ALIASES, load_encoder, model_short_name, resolve_alias

__all__ = [
    "KINDS",
    "Encoder",
    "PreprocessSpec",
    "REFERENCE_LP_PREPROCESS",
    "l2_normalize",
    "ALIASES",
    "load_encoder",
    "model_short_name",
    "resolve_alias",
]
