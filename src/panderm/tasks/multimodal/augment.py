"""Image transforms of the multimodal task: paired crops and flips, the reference's cv2-style resize chain,
normalisation (docs/REFERENCE.md, Multimodal finetune)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ...errors import DataError
from ...models.constants import IMAGENET_MEAN, IMAGENET_STD

RESIZE_MODES = ("antialias", "reference")

# -- image transforms --------------------------------------------------------------------

@dataclass(frozen=True)
class AugParams:
    """One draw of the train augmentation: crop box, flips and quarter turns."""

    top: int
    left: int
    height: int
    width: int
    vflip: bool
    hflip: bool
    rot90: int  # counter-clockwise quarter turns, 0..3


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def sample_crop(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """A RandomResizedCrop box (top, left, h, w): area fraction in `scale`, aspect in `ratio`.

    Ten tries as torchvision and albumentations do, then the largest centred box whose
    aspect ratio is in range.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_aug_params(height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                      generator: torch.Generator | None = None) -> AugParams:
    """The reference's train chain: RandomResizedCrop, VerticalFlip(0.5), HorizontalFlip(0.5),
    RandomRotate90(0.5) - which, when it fires, turns by a random 0..3 quarter turns."""
    top, left, h, w = sample_crop(height, width, scale, ratio, generator)
    vflip = _uniform(0, 1, generator) < 0.5
    hflip = _uniform(0, 1, generator) < 0.5
    rot = _randint(0, 3, generator) if _uniform(0, 1, generator) < 0.5 else 0
    return AugParams(top, left, h, w, vflip, hflip, rot)


def reference_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.resize(INTER_LINEAR) on an 8-bit image: bilinear, half-pixel centres, no antialias, rounded to uint8.

    `image` is float [C, H, W] in [0, 1] on the 1/255 grid; so is the result.
    """
    if tuple(image.shape[-2:]) == (size, size):
        return image  # cv2 returns a copy at the same size
    out = torch.nn.functional.interpolate(image[None] * 255, size=(size, size), mode="bilinear",
                                          align_corners=False, antialias=False)[0]
    return out.round().clamp(0, 255) / 255


def apply_aug(image: torch.Tensor, params: AugParams, size: int, resize_mode: str = "antialias") -> torch.Tensor:
    """Apply one draw to a [C, H, W] float image; the output is [C, size, size]."""
    if resize_mode == "reference":
        crop = image[..., params.top:params.top + params.height, params.left:params.left + params.width]
        out = reference_resize(crop, size)
    else:
        out = TF.resized_crop(image, params.top, params.left, params.height, params.width, [size, size],
                              interpolation=InterpolationMode.BILINEAR, antialias=True)
    if params.vflip:
        out = TF.vertical_flip(out)
    if params.hflip:
        out = TF.horizontal_flip(out)
    if params.rot90:
        out = torch.rot90(out, params.rot90, dims=(-2, -1))
    return out


def to_float_tensor(image) -> torch.Tensor:
    """PIL image or uint8/float [C,H,W] tensor → float32 in [0, 1]."""
    if not isinstance(image, torch.Tensor):
        image = TF.pil_to_tensor(image)
    return TF.to_dtype(image, torch.float32, scale=True)


@dataclass
class PairedTransform:
    """Clinical + dermoscopic images → two normalised tensors.

    Train: resize to `resize_to`² → random resized crop to `image_size`² → vertical flip →
    horizontal flip → quarter turns. With `paired=True` (the reference) one parameter draw
    serves both images, so they stay aligned; with `paired=False` each gets its own draw.
    Eval (`train=False`): resize to `image_size`², deterministic.
    `resize_mode="reference"` first resizes every image to `image_size`² as the reference's
    loader did, and all resizes are `reference_resize` (cv2 INTER_LINEAR).
    `bgr=True` reverses the channels before normalising, exactly what the reference's cv2
    loading fed the encoders.
    """

    train: bool
    image_size: int = 224
    resize_to: int = 256
    paired: bool = True
    bgr: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resize_mode: str = "antialias"

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise DataError(f"unknown resize mode {self.resize_mode!r}; use one of {', '.join(RESIZE_MODES)}")

    def _resize(self, image: torch.Tensor, size: int) -> torch.Tensor:
        if self.resize_mode == "reference":
            return reference_resize(image, size)
        return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            image = image.flip(0)
        return TF.normalize(image, list(self.mean), list(self.std))

    def one(self, image, params: AugParams | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform one image (train: with `params`, or a fresh draw)."""
        image = to_float_tensor(image)
        if self.resize_mode == "reference":
            image = self._resize(image, self.image_size)  # the reference's loader: cv2.resize to 224 first
        if not self.train:
            return self._finish(self._resize(image, self.image_size))
        image = self._resize(image, self.resize_to)
        if params is None:
            params = self.sample(generator)
        return self._finish(apply_aug(image, params, self.image_size, self.resize_mode))

    def sample(self, generator: torch.Generator | None = None) -> AugParams:
        return sample_aug_params(self.resize_to, self.resize_to, self.scale, self.ratio, generator)

    def __call__(self, clinical, derm, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shared = self.sample(generator) if self.train and self.paired else None
        return self.one(clinical, shared, generator), self.one(derm, shared, generator)
