"""Opening images the way a researcher's folder actually holds them.

EXIF orientation is applied; palette, RGBA, LA, CMYK, grayscale, 16-bit and float
images all come out as 8-bit RGB. 16-bit data is scaled (value / 257), not
clipped, which is what `Image.convert("RGB")` would silently do.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

#: Largest image (width x height) opened, when set: it replaces PIL's decompression-bomb limit. Read by every
#: process (DataLoader / preresize workers inherit it); `image_pixel_limit` (the doors' max-image-pixels setting)
#: sets it.
PIXEL_LIMIT_ENV = "PANDERM_MAX_IMAGE_PIXELS"
PIXEL_LIMIT_HINT = f"raise the limit with {PIXEL_LIMIT_ENV}=N"
#: the error `param` of an image over the limit (the doors' max-image-pixels flag)
PIXEL_LIMIT_PARAM = "max_image_pixels"


def _env_limit() -> int | None | bool:
    """The limit set through PANDERM_MAX_IMAGE_PIXELS: a pixel count, None (0: no limit), False when unset."""
    raw = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not raw:
        return False
    try:
        value = int(float(raw))
    except ValueError:
        raise DataError(f"{PIXEL_LIMIT_ENV}={raw!r} is not a number of pixels") from None
    if value < 0:
        raise DataError(f"{PIXEL_LIMIT_ENV}={raw!r}: the pixel limit must be >= 0 (0: no limit)")
    return value or None


def max_image_pixels() -> int | None:
    """The largest width x height opened (None: no limit).

    PANDERM_MAX_IMAGE_PIXELS when set (0 = no limit), else PIL's own limit: it refuses images over twice
    `PIL.Image.MAX_IMAGE_PIXELS` (178,956,970 pixels by default) as possible decompression bombs.
    """
    env = _env_limit()
    if env is not False:
        return env
    return None if Image.MAX_IMAGE_PIXELS is None else int(2 * Image.MAX_IMAGE_PIXELS)


def _apply_env_limit() -> None:
    # With our own limit set, PIL's check is off (its warning and error thresholds are not ours): open_header
    # checks. A malformed value is reported when an image is opened, not at import.
    try:
        if _env_limit() is not False:
            Image.MAX_IMAGE_PIXELS = None
    except DataError:
        pass


@contextlib.contextmanager
def image_pixel_limit(pixels: int | None):
    """Within the block, images of up to `pixels` (width x height) open; 0 lifts the limit; None keeps it.

    For real gigapixel slides. Sets PANDERM_MAX_IMAGE_PIXELS (so worker processes see it) and turns PIL's
    own check off; both are restored on exit.
    """
    if pixels is None:
        yield
        return
    pixels = int(pixels)
    if pixels < 0:
        raise DataError(f"the pixel limit must be >= 0 (0: no limit), got {pixels}", param="max_image_pixels")
    before_env, before_pil = os.environ.get(PIXEL_LIMIT_ENV), Image.MAX_IMAGE_PIXELS
    os.environ[PIXEL_LIMIT_ENV] = str(pixels)
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(PIXEL_LIMIT_ENV, None)
        else:
            os.environ[PIXEL_LIMIT_ENV] = before_env
        Image.MAX_IMAGE_PIXELS = before_pil


class ImageTooLarge(DataError):
    """An image over the pixel limit (a possible decompression bomb); `reason` reads "too large (N pixels, ...)"."""

    def __init__(self, pixels: int | None, limit: int | None, size=None, path=None):
        self.pixels, self.limit, self.size = pixels, limit, size
        dims = f"{size[0]}x{size[1]} = " if size else ""
        count = f"{dims}{pixels} pixels" if pixels is not None else "more pixels than allowed"
        over = f"over the limit of {limit}" if limit is not None else "over the limit"
        self.reason = f"too large ({count}, {over} that guards against decompression bombs; {PIXEL_LIMIT_HINT})"
        super().__init__(f"image {path} is {self.reason}" if path is not None else self.reason,
                         param=PIXEL_LIMIT_PARAM)

    def at(self, path) -> "ImageTooLarge":
        return ImageTooLarge(self.pixels, self.limit, self.size, path)


def _bomb(exc: Exception) -> ImageTooLarge:
    """PIL's DecompressionBombError as ImageTooLarge (its message carries the pixel count)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return ImageTooLarge(int(found.group(1)) if found else None, max_image_pixels())


def open_header(path: str | os.PathLike) -> Image.Image:
    """`Image.open` (header only) under the pixel limit: ImageTooLarge for a possible decompression bomb.

    Other errors (missing file, not an image) propagate as PIL raises them; use as a context manager.
    """
    env = _env_limit()
    if env is not False and Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = None  # the variable was set after import: ours replaces PIL's check from now on
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _bomb(exc) from None
    if env:  # our own limit replaces PIL's
        w, h = img.size
        if max(1, w) * max(1, h) > env:
            img.close()
            raise ImageTooLarge(max(1, w) * max(1, h), env, (w, h))
    return img


_apply_env_limit()


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
        with open_header(path) as img:
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
    except ImageTooLarge as exc:
        raise exc.at(path) from None
    except Image.DecompressionBombError as exc:  # a frame or tile larger than the header said
        raise _bomb(exc).at(path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt image {path}: {exc}") from None


def check_image(path: str | os.PathLike) -> str | None:
    """None when `path` decodes fully, else a short reason."""
    try:
        open_image(path)
    except DataError as exc:
        return str(exc)
    return None
