"""Per-image facts for the dataset audit: file hash, header stats and flip-robust perceptual hashes.

The perceptual hash is a DCT hash (pHash): grayscale, 32x32, 2-D DCT, the 12x12 lowest frequencies but the DC
term (143 bits) compared with their median. On the bundled samples (465 real images) distinct images stay
26+ bits apart while halved, JPEG-q50 copies land within 16; the common 8x8 (63-bit) hash put two
different PH2 dermoscopies 4 bits apart, inside that range. Resizing and JPEG re-encoding move high frequencies and leave the low ones, so a resized,
re-encoded copy lands within a few bits of its source. A horizontal flip is not such a change (the low
frequencies change sign along x), so each image is also hashed flipped and a pair's distance is the smallest
over (a, b), (a, flip b) and (flip a, b).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

HASH_SIDE = 32  # the DCT input
HASH_BLOCK = 12  # the lowest HASH_BLOCK x HASH_BLOCK frequencies, less DC, make the hash
HASH_LEN = HASH_BLOCK * HASH_BLOCK - 1
HASH_WORDS = (HASH_LEN + 63) // 64
DEFAULT_PHASH_THRESHOLD = 16


@dataclass
class ImageFacts:
    """What the audit learns from one file; `reason` is set (and the hashes are 0) when it cannot be read."""

    sha256: str | None = None
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    phash: tuple = (0,) * HASH_WORDS
    phash_flip: tuple = (0,) * HASH_WORDS
    reason: str | None = None


def _pack(bits: np.ndarray) -> tuple[int, ...]:
    padded = np.zeros(64 * HASH_WORDS, np.uint8)
    padded[:len(bits)] = bits
    return tuple(int(w) for w in np.packbits(padded).view(">u8"))


def phash_pair(gray: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(hash, hash of the horizontally flipped image) of a HASH_SIDE² grayscale array, as HASH_WORDS ints."""
    from scipy.fft import dctn

    out = []
    for arr in (gray, gray[:, ::-1]):
        # The DC term is the mean brightness: it says nothing about the picture's layout and would sit far
        # above every AC term, so it is left out.
        low = dctn(arr, type=2, norm="ortho")[:HASH_BLOCK, :HASH_BLOCK].ravel()[1:]
        out.append(_pack(low > np.median(low)))
    return out[0], out[1]


def hamming(a, b) -> int:
    """Bits that differ between two hashes (tuples of HASH_WORDS ints)."""
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b))


def gray_thumbnail(img) -> np.ndarray:
    """A PIL image → HASH_SIDE² grayscale float64 (area averaging, so every source pixel counts)."""
    from PIL import Image

    small = img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX, reducing_gap=None)
    return np.asarray(small, dtype=np.float64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_facts(path: str | os.PathLike) -> ImageFacts:
    """Hash, header and perceptual hashes of one file; never raises for a bad file (the reason is recorded)."""
    from PIL import ImageOps, UnidentifiedImageError

    from ..data.images import ImageTooLarge, open_header

    path = Path(path)
    facts = ImageFacts()
    try:
        if path.is_dir():
            facts.reason = "a directory"
            return facts
        if path.stat().st_size == 0:
            facts.reason = "empty file"
            return facts
        facts.sha256 = _sha256(path)
        with open_header(path) as img:
            facts.format, facts.mode = img.format, img.mode
            facts.width, facts.height = img.size
            if img.format == "JPEG":
                # The hash needs 32 px: decoding at 1/2..1/8 scale is several times faster and changes only
                # the high frequencies the hash ignores.
                img.draft("RGB", (4 * HASH_SIDE, 4 * HASH_SIDE))
            img.load()  # full decode: a truncated or corrupt file fails here
            gray = gray_thumbnail(_to_rgb(ImageOps.exif_transpose(img)))
    except FileNotFoundError:
        facts.reason = "missing"
        return facts
    except ImageTooLarge as exc:
        facts.reason = exc.reason
        return facts
    except UnidentifiedImageError:
        facts.reason = "not an image (or unsupported format)"
        return facts
    except (OSError, SyntaxError, ValueError) as exc:
        facts.reason = f"corrupt ({str(exc).strip() or type(exc).__name__})"
        return facts
    except Exception as exc:  # PIL raises odd types on hostile files; the audit reports, never crashes
        facts.reason = f"unreadable ({type(exc).__name__}: {exc})"
        return facts
    facts.phash, facts.phash_flip = phash_pair(gray)
    return facts


def _to_rgb(img):
    from ..data.images import to_rgb

    return to_rgb(img)


def collect_facts(paths: Sequence[Path], workers: int | None = None) -> list[ImageFacts]:
    """`image_facts` of every distinct path (decoding releases the GIL, so threads help), in `paths` order."""
    unique = list(dict.fromkeys(paths))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = dict(zip(unique, pool.map(image_facts, unique)))
    return [found[p] for p in paths]


def hamming_pairs(hashes: np.ndarray, flipped: np.ndarray, threshold: int, valid: np.ndarray | None = None,
                  chunk: int = 256) -> list[tuple[int, int, int, bool]]:
    """Every (i, j, distance, flipped) with i < j and flip-robust Hamming distance ≤ threshold.

    `hashes` / `flipped`: [N, HASH_WORDS] ints. `flipped` in the result is True when only a flipped comparison
    came within the threshold. Rows outside `valid` (images that could not be read) are never paired. All
    pairs are compared, `chunk` rows at a time (N²/2 popcounts: about a second for 10k images).
    """
    h = np.asarray(hashes, dtype=np.uint64).reshape(len(hashes), -1)
    f = np.asarray(flipped, dtype=np.uint64).reshape(len(flipped), -1)
    n = len(h)
    ok = np.ones(n, bool) if valid is None else np.asarray(valid, bool)

    def dist(x, y):
        total = np.zeros((len(x), len(y)), np.uint16)
        for w in range(x.shape[1]):  # word by word: 2-D temporaries only
            total += np.bitwise_count(x[:, w, None] ^ y[None, :, w])
        return total

    chunk = max(8, min(chunk, 2_000_000 // max(n, 1)))  # ~16 MB per temporary, whatever N
    found = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        a, af = h[start:stop], f[start:stop]
        later, later_f = h[start:], f[start:]  # only j ≥ start can pair with i ≥ start as (i, j), i < j
        straight = dist(a, later)
        best = np.minimum(straight, np.minimum(dist(a, later_f), dist(af, later)))
        cols = np.arange(start, n)[None, :]
        keep = (best <= threshold) & (cols > np.arange(start, stop)[:, None]) & ok[start:stop, None] & ok[None, start:]
        for i, j in zip(*np.nonzero(keep)):
            d = int(best[i, j])
            found.append((int(start + i), int(start + j), d, bool(straight[i, j] > d)))
    return found


def cosine_pairs(features: np.ndarray, threshold: float, chunk: int = 1024) -> list[tuple[int, int, float]]:
    """Every (i, j, cosine) with i < j and cosine similarity of the rows ≥ threshold."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    found = []
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows = np.arange(start, min(n, start + chunk))[:, None]
        keep = (sims >= threshold) & (np.arange(n)[None, :] > rows)
        for i, j in zip(*np.nonzero(keep)):
            found.append((int(start + i), int(j), float(min(1.0, sims[i, j]))))
    return found
