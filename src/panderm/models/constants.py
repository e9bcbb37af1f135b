"""Normalisation constants, one home for the whole package (issue 14 item 4).

Three families of mean/std appear in the evaluations (docs/REFERENCE.md):

- OpenAI CLIP's dataset statistics: open_clip's default and what `PreprocessSpec` falls back to;
- ImageNet's: PanDerm v1, MONET, timm/torchvision backbones and the finetuning transforms;
- the reference's linear-probe / finetuning std with its typo (0.228 instead of 0.229 for red), kept so the
  reference doors reproduce its numbers.
"""
from __future__ import annotations

OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# The reference's typo; the mean it is paired with is IMAGENET_MEAN.
REFERENCE_STD: tuple[float, float, float] = (0.228, 0.224, 0.225)

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "REFERENCE_STD"]
