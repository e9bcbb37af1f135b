"""The Python API: load any model once, then classify, embed or compare.

    from panderm import PanDerm2
    model = PanDerm2.from_pretrained("hf-hub:redlessone/PanDerm2")      # any model id
    model.zero_shot_classify("lesion.jpg", ["melanoma", "nevus"])        # {class: probability}
    model.zero_shot_classify(["a.jpg", "b.jpg"], classes)                # one dict per image

It uses the model's own preprocessing, RGB images with EXIF orientation applied,
and the same classifier as the zero-shot task (normalised prompt embeddings
averaged over templates, softmax of 100 · cosine).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from .data.images import open_image, to_rgb
from .data.templates import SKIN_TEMPLATES
from .models import Encoder, load_encoder

ImageLike = Union[str, os.PathLike, Image.Image]


class Model:
    """A loaded encoder with task-level helpers."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    @classmethod
    def from_pretrained(cls, model_id: str = "PanDerm2", checkpoint: str | None = None, device: str = "cpu",
                        allow_random_init: bool = False) -> "Model":
        return cls(load_encoder(model_id, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoder.model_id!r}, family={self.encoder.family!r})"

    def _pixels(self, images: Sequence[ImageLike]) -> torch.Tensor:
        tensors = []
        for img in images:
            pil = to_rgb(img) if isinstance(img, Image.Image) else open_image(img)
            tensors.append(self.encoder.preprocess(pil))
        return torch.stack(tensors).to(self.encoder.device)

    @torch.inference_mode()
    def encode_images(self, images: ImageLike | Sequence[ImageLike], kind: str = "embed", normalize: bool = True,
                      batch_size: int = 32) -> np.ndarray:
        """[N, D] float32 embeddings (L2-normalised unless `normalize=False`)."""
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        out = []
        for start in range(0, len(items), batch_size):
            emb = self.encoder.encode_image(self._pixels(items[start:start + batch_size]), kind).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1) if normalize else emb)
        return torch.cat(out).cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, texts: str | Sequence[str], normalize: bool = True) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        emb = self.encoder.encode_text(self.encoder.tokenize(texts).to(self.encoder.device)).float()
        return (torch.nn.functional.normalize(emb, dim=-1) if normalize else emb).cpu().numpy()

    def zero_shot_classify(self, images: ImageLike | Sequence[ImageLike], classnames: Sequence[str],
                           templates: Sequence[str] | None = None) -> dict[str, float] | list[dict[str, float]]:
        """Class probabilities for one image (a dict) or a list of images (a list of dicts)."""
        from .tasks.zeroshot import class_embeddings, zero_shot_probs

        single = isinstance(images, (str, os.PathLike, Image.Image))
        weights = class_embeddings(self.encoder, list(classnames), list(templates or SKIN_TEMPLATES))
        probs = zero_shot_probs(self.encode_images(images, normalize=False), weights)
        rows = [{c: float(p) for c, p in zip(classnames, row)} for row in probs]
        return rows[0] if single else rows


# The name the PanDerm-2 README advertises; it loads any supported model id.
PanDerm2 = Model
