"""The one interface every model family satisfies.

An `Encoder` wraps a loaded model with its preprocessing and tokenizer:

- ``preprocess``: PIL image → tensor [3, H, W]
- ``tokenize(texts)``: list of str → token ids (text models only)
- ``encode_image(x, kind)`` with kind ∈ {``embed``, ``features``, ``tokens``}:
  ``embed`` is the projected joint-space vector (zero-shot, retrieval),
  ``features`` the pooled pre-projection vector (linear probe),
  ``tokens`` the per-token sequence [B, T, D] (finetuning; ``[:, 0]`` is CLS).
- ``encode_text(ids)``: projected text vectors (unnormalised)
- ``embed_dim``, ``feature_dim``, ``fingerprint`` (hash of weights + preprocessing).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError

KINDS = ("embed", "features", "tokens")


@dataclass
class PreprocessSpec:
    """Evaluation transform: resize → crop → RGB → tensor → normalise."""

    size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest | longest | squash
    resize_to: int | None = None  # resize the short side to this, then crop `size` (None = size)
    # The reference's PIL loaders ignore the EXIF orientation tag; the doors turn this off to match them.
    exif_transpose: bool = True

    def describe(self) -> dict:
        d = asdict(self)
        d["mean"] = [float(v) for v in self.mean]
        d["std"] = [float(v) for v in self.std]
        return d

    def build(self) -> Callable:
        from torchvision import transforms as T

        interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}.get(self.interpolation)
        if interp is None:
            raise ModelError(f"unknown interpolation {self.interpolation!r} (bicubic, bilinear)")
        if self.resize_mode == "squash":
            steps = [T.Resize((self.size, self.size), interpolation=interp)]
        elif self.resize_mode == "longest":
            from open_clip.transform import ResizeKeepRatio, CenterCropOrPad

            steps = [ResizeKeepRatio(self.size, interpolation=interp, longest=1), CenterCropOrPad(self.size)]
        elif self.resize_mode == "shortest":
            steps = [T.Resize(self.resize_to or self.size, interpolation=interp), T.CenterCrop(self.size)]
        else:
            raise ModelError(f"unknown resize mode {self.resize_mode!r} (shortest, longest, squash)")
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])


# Reference linear-probe / v1 transform: Resize 256 bilinear, crop 224, ImageNet mean and
# the reference's std typo 0.228 (ref-panderm2.md §4.3).
REFERENCE_LP_PREPROCESS = PreprocessSpec(
    size=224, mean=(0.485, 0.456, 0.406), std=(0.228, 0.224, 0.225), interpolation="bilinear", resize_to=256,
    exif_transpose=False,
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Base class: subclasses implement `_image(x, kind)` and, for text models, `_text(ids)`."""

    family: str = "base"
    image_kinds: tuple[str, ...] = KINDS

    def __init__(
        self,
        model_id: str,
        preprocess_spec: PreprocessSpec,
        tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None,
        random_init: bool = False,
        extra: dict | None = None,
    ):
        super().__init__()
        self.model_id = model_id
        self.preprocess_spec = preprocess_spec
        self.preprocess = preprocess_spec.build()
        self._tokenizer = tokenizer
        self.random_init = random_init
        self.extra = dict(extra or {})
        self._fingerprint: str | None = None
        self._dims: dict[str, int] = {}

    # -- interface ---------------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        return self._tokenizer is not None

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self._tokenizer is None:
            raise ModelError(f"{self.model_id} is a vision-only model: it has no text tower")
        return self._tokenizer(list(texts))

    def encode_image(self, x: torch.Tensor, kind: str = "embed") -> torch.Tensor:
        if kind not in self.image_kinds:
            raise ModelError(f"{self.model_id} does not provide kind {kind!r}; it offers {', '.join(self.image_kinds)}")
        return self._image(x, kind)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        if self._tokenizer is None:
            raise ModelError(f"{self.model_id} is a vision-only model: it has no text tower")
        return self._text(ids)

    def _image(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        raise NotImplementedError

    def projection_head(self):
        """A callable with `embed == head(features)`, or None when `embed` is not a function of `features`.

        It lets one cached extraction of `features` serve both the linear probe and
        zero-shot / retrieval (which need `embed`) without re-encoding any image.
        """
        return None

    def _text(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        try:
            return next(self.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def output_dim(self, kind: str) -> int:
        """Width of `encode_image(x, kind)` (last axis), measured once on a dummy batch."""
        if kind not in self._dims:
            size = self.preprocess_spec.size
            with torch.inference_mode():
                out = self.encode_image(torch.zeros(1, 3, size, size, device=self.device), kind)
            self._dims[kind] = int(out.shape[-1])
        return self._dims[kind]

    @property
    def embed_dim(self) -> int:
        return self.output_dim("embed")

    @property
    def feature_dim(self) -> int:
        return self.output_dim("features")

    @property
    def fingerprint(self) -> str:
        """sha256 of every weight tensor (in key order) plus the preprocessing."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for key, tensor in self.state_dict().items():
                h.update(key.encode())
                t = tensor.detach().cpu().contiguous()
                h.update(str(t.dtype).encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            h.update(json.dumps(self.preprocess_spec.describe(), sort_keys=True).encode())
            h.update(self.family.encode())
            self._fingerprint = h.hexdigest()[:20]
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Provenance written next to every output."""
        return {
            "model_id": self.model_id,
            "family": self.family,
            "fingerprint": self.fingerprint,
            "random_init": self.random_init,
            "preprocess": self.preprocess_spec.describe(),
            **self.extra,
        }

    def set_preprocess(self, spec: PreprocessSpec) -> None:
        self.preprocess_spec = spec
        self.preprocess = spec.build()
        self._fingerprint = None


def l2_normalize(x: torch.Tensor | np.ndarray):
    if isinstance(x, np.ndarray):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return torch.nn.functional.normalize(x, dim=-1)
