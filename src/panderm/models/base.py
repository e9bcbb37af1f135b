"""The one interface every model family satisfies.

An `Encoder` wraps a loaded model with its preprocessing and tokenizer:

- ``preprocess``: PIL image → tensor [3, H, W]
- ``tokenize(texts)``: list of str → token ids (text models only)
- ``encode_image(x, kind)`` with kind ∈ {``embed``, ``features``, ``tokens``}:
  ``embed`` is the projected joint-space vector (zero-shot, retrieval),
  ``features`` the pooled pre-projection vector (linear probe),
  ``tokens`` the per-token sequence [B, T, D] (finetuning; ``[:, 0]`` is CLS).
- ``encode_text(ids)``: projected text vectors (unnormalised)
- ``embed_dim``, ``feature_dim``, ``fingerprint`` (hash of weights + architecture + configuration +
  preprocessing).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .constants import IMAGENET_MEAN, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, REFERENCE_STD

KINDS = ("embed", "features", "tokens")


def _same(features):
    return features  # `embed` is `features` (no joint-space projection)


@dataclass
class PreprocessSpec:
    """Evaluation transform: resize → crop → RGB → tensor → normalise."""

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"  # shortest | longest | squash
    resize_to: int | None = None  # resize the short side to this, then crop `size` (None = size)
    # The reference's PIL loaders ignore the EXIF orientation tag; the doors turn this off to match them.
    exif_transpose: bool = True
    # Decode a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) whose short side is still >= 2x the resize target:
    # full decoding of a 3000 px photo dominates the time for a 224 px model, and the reduced image is resized
    # down anyway. The panderm CLI and API turn it on (unless full decoding is asked for); the doors decode fully,
    # as the reference.
    draft_decode: bool = False

    @property
    def draft_size(self) -> int | None:
        """The smallest short side the JPEG decoder may produce, or None for full decoding."""
        return 2 * max(self.size, self.resize_to or 0) if self.draft_decode else None

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
# the reference's std typo 0.228 (docs/REFERENCE.md).
REFERENCE_LP_PREPROCESS = PreprocessSpec(
    size=224, mean=IMAGENET_MEAN, std=REFERENCE_STD, interpolation="bilinear", resize_to=256,
    exif_transpose=False,
)


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
        # What builds the model besides its weights: the family's config file(s) as read and the construction
        # kwargs derived from them (set by each loader; part of the fingerprint).
        self.model_config: dict = {}
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
        zero-shot / retrieval (which need `embed`) without re-encoding any image. Where `embed_is_features`, the
        identity; a family with a projection returns it.
        """
        return _same if self.embed_is_features else None

    #: True where `encode_image(x, "embed")` is `encode_image(x, "features")` (no joint-space projection:
    #: vision-only backbones, towers without a projection), so a cached `features` extraction is `embed` as is.
    #: Every family says so (a class attribute, or a property where it depends on the tower);
    #: `projection_head()` is then the identity.
    embed_is_features: bool = False

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
        """sha256 of every weight tensor (key, dtype, shape, bytes) plus the architecture and the preprocessing.

        The architecture is what the weights do not pin down: a head count, an epsilon, an activation, a
        pooling mode. It is recorded twice, from the loader's `model_config` (the config file as read and the
        kwargs derived from it) and from the built modules themselves (`architecture()`), so a config edit
        that keeps every tensor shape (`vision_cfg.head_width`) still gives another fingerprint.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for key, tensor in self.state_dict().items():
                h.update(key.encode())
                t = tensor.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            h.update(json.dumps({"family": self.family, "preprocess": self.preprocess_spec.describe(),
                                 "config": plain(self.model_config), "architecture": self.architecture()},
                                sort_keys=True).encode())
            self._fingerprint = h.hexdigest()[:20]
        return self._fingerprint

    def architecture(self) -> list:
        """Every submodule's class and its plain settings (ints, floats, strings, dataclass configs, HF configs).

        Tensors are left to the weight hash; names starting with `_`, `training` and HF's `name_or_path`
        (where the files happen to be) are left out so the same model loaded from another folder matches.
        """
        out, seen_configs = [], set()
        for name, module in self.named_modules():
            if not name:
                continue  # the Encoder itself: its own attributes are run state, not architecture
            attrs = {}
            for key, value in vars(module).items():
                if key.startswith("_") or key in _NOT_ARCHITECTURE:
                    continue
                if key == "config" and hasattr(value, "to_dict"):
                    if id(value) not in seen_configs:
                        seen_configs.add(id(value))
                        attrs[key] = plain({k: v for k, v in value.to_dict().items() if not k.startswith("_")})
                    continue
                value = _setting(value)
                if value is not _SKIP:
                    attrs[key] = value
            out.append([name, f"{type(module).__module__}.{type(module).__qualname__}", attrs])
        return out

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

    def set_draft_decode(self, on: bool) -> None:
        """Reduced-size JPEG decoding for feature extraction (:attr:`PreprocessSpec.draft_decode`)."""
        if self.preprocess_spec.draft_decode != bool(on):
            import dataclasses

            self.set_preprocess(dataclasses.replace(self.preprocess_spec, draft_decode=bool(on)))


_NOT_ARCHITECTURE = frozenset({"training", "name_or_path"})
_SKIP = object()


def _setting(value):
    """A module attribute as plain JSON data, or _SKIP for what is not a setting (tensors, modules, callables)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_setting(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    return _SKIP


def plain(obj):
    """JSON-ready data with a stable text: dict keys as strings, tuples as lists, paths as strings and any other
    object as its type name (never its repr, which may hold a memory address)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(asdict(obj))
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def l2_normalize(x: torch.Tensor | np.ndarray):
    if isinstance(x, np.ndarray):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return torch.nn.functional.normalize(x, dim=-1)
