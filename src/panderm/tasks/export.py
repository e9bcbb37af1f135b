"""Feature export: a CSV of images → float32 [N, D] `.npy` + a JSON sidecar."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..data.images import image_pixel_limit
from ..data.tables import load_table
from ..distributed import is_main
from ..features import extract_features
from ..models import load_encoder
from ..models.base import PreprocessSpec
from ..report import atomic_path, provenance, write_json

log = logging.getLogger(__name__)
_CHUNK = 8192


def write_array_streaming(source: np.ndarray, out: str | os.PathLike, normalize: bool = False) -> Path:
    """Copy `source` (possibly memory-mapped) to `out` chunk by chunk, optionally L2-normalising rows."""
    out = Path(out)
    with atomic_path(out, suffix=".npy") as tmp:
        dest = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=source.shape)
        for start in range(0, source.shape[0], _CHUNK):
            block = np.asarray(source[start:start + _CHUNK], dtype=np.float32)
            if normalize:
                block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            dest[start:start + _CHUNK] = block
        dest.flush()
        del dest
    return out


def export_features(
    model: str,
    csv: str | os.PathLike,
    image_col: str,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    kind: str = "embed",
    normalize: bool = False,
    checkpoint: str | None = None,
    device: str = "cpu",
    batch_size: int | str = 64,
    num_workers: int | None = None,
    precision: str = "amp",
    cache: bool = True,
    cache_dir: str | None = None,
    allow_random_init: bool = False,
    preprocess: PreprocessSpec | None = None,
    progress: bool = True,
    allow_outside_root: bool = False,
    compile: bool = False,
    exif_transpose: bool = True,
    max_image_pixels: int | None = None,
    draft_decode: bool = False,
) -> dict:
    """Validate the CSV, load the model, encode (or read the cache), write `out` + `out.json`.

    `exif_transpose=False` ignores EXIF orientation tags, as the reference's loader did; `draft_decode=True`
    decodes JPEGs at a reduced DCT scale (:attr:`PreprocessSpec.draft_decode`). `max_image_pixels`:
    the largest width x height opened (default: PIL's decompression-bomb limit, 178,956,970 pixels; 0: no
    limit); a larger image is refused naming its CSV row and pixel count. `allow_outside_root` is accepted
    and ignored (absolute and `../` image paths are always accepted)."""
    with image_pixel_limit(max_image_pixels):
        return _export_features(model, csv, image_col, out, root=root, kind=kind, normalize=normalize,
                                checkpoint=checkpoint, device=device, batch_size=batch_size,
                                num_workers=num_workers, precision=precision, cache=cache, cache_dir=cache_dir,
                                allow_random_init=allow_random_init, preprocess=preprocess, progress=progress,
                                compile=compile, exif_transpose=exif_transpose,
                                draft_decode=draft_decode)


def _export_features(model, csv, image_col, out, *, root, kind, normalize, checkpoint, device, batch_size,
                     num_workers, precision, cache, cache_dir, allow_random_init, preprocess, progress, compile, exif_transpose, draft_decode) -> dict:
    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_suffix(out.suffix + ".npy") if out.suffix else out.with_suffix(".npy")
    table = load_table(csv, image_col, root=root)
    encoder = load_encoder(model, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init,
                           preprocess=preprocess)
    if not exif_transpose:
        import dataclasses

        encoder.set_preprocess(dataclasses.replace(encoder.preprocess_spec, exif_transpose=False))
    encoder.set_draft_decode(draft_decode)
    result = extract_features(encoder, table.paths, kind, batch_size=batch_size, num_workers=num_workers,
                              precision=precision, cache=cache, cache_dir=cache_dir, progress=progress,
                              compile=compile)
    if not is_main():  # under torchrun, rank 0 writes the files
        return {"from_cache": result.from_cache, "rank": "worker"}
    write_array_streaming(result.array, out, normalize=normalize)
    meta = {
        "model": encoder.describe(),
        "kind": kind,
        "normalized": normalize,
        "csv": str(Path(csv)),
        "csv_sha256": table.csv_sha256,
        "image_col": image_col,
        "n": int(result.array.shape[0]),
        "d": int(result.array.shape[1]),
        "from_cache": result.from_cache,
        "cache_key": result.key,
        "seconds": round(result.seconds, 3),
    }
    meta["provenance"] = provenance(encoder, [csv])
    if encoder.random_init:
        meta["warning"] = "RANDOM WEIGHTS: these features come from an untrained model"
    write_json(out.with_suffix(".json"), meta)
    return {**meta, "out": str(out)}  # the path written (".npy" is appended to an output path without it)
