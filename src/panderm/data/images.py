"""Opening images the way a researcher's folder actually holds them.

EXIF orientation is applied; palette, RGBA, LA, CMYK, grayscale, 16-bit and float
images all come out as 8-bit RGB. 16-bit data is scaled (value / 257), not
clipped, which is what `Image.convert("RGB")` would silently do.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB; alpha is dropped as `convert('RGB')` does (the reference)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def open_image(path: str | os.PathLike, exif: bool = True, draft: int | None = None) -> Image.Image:
    """Open `path` as RGB, raising DataError with the path on any failure.

    `draft` asks the JPEG decoder for a reduced size (≥ draft px on the short side);
    this speeds up decoding large photos when the model input is small.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
            if exif:
                img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"image path is a directory: {path}") from None
    except UnidentifiedImageError:
        raise DataError(f"not an image (or unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt image {path}: {exc}") from None


def check_image(path: str | os.PathLike) -> str | None:
    """None when `path` decodes fully, else a short reason."""
    try:
        open_image(path)
    except DataError as exc:
        return str(exc)
    return None
