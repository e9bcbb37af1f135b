"""Pre-resized copies of a CSV's images: decode a large photo once, not on every extraction.

`preresize(csv, image_col, out, size=448)` writes, for every image of the CSV, a copy at the same relative
path under `out` (so the same CSV works with `out` as its image root) whose shorter side is `size` px:

* aspect ratio kept, Lanczos resampling (antialiased), never upscaled: an image whose shorter side is
  already ≤ `size` is copied byte for byte (`open_image` then reads exactly what it read before);
* EXIF orientation applied and the mode converted to 8-bit RGB exactly as `open_image` does, so a resized
  copy carries no orientation tag and opens upright everywhere;
* JPEG inputs (and any format other than PNG) become JPEG at `quality` (95, 4:4:4 chroma);
  PNG inputs stay PNG (lossless). The file name never changes;
* every file is written to a temporary name next to it and renamed, so an interrupted or failed run
  leaves no partial file;
* an output newer than its source, made with the same settings, is skipped: a rerun only redoes what
  changed. The settings are kept in `out/.panderm-preresize.json`; other settings redo everything.

The default size, 448, is twice the 224 px input of most models here: the model's own resize still does
the last antialiased downsampling step (its features stay close to a full decode; docs/BENCHMARKS.md), a
`Resize(256) → CenterCrop(224)` transform (the reference linear probe) has room, and a 12 MP phone photo
shrinks ~20× in pixels. Use at least twice the largest input size of the models you will run
(`recommended_size`).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .data.images import PIXEL_LIMIT_PARAM, image_pixel_limit, open_image
from .data.tables import _probe, _rows, list_items, read_csv, require_columns, resolve_paths
from .errors import DataError
from .report import atomic_path

DEFAULT_SIZE = 448
MANIFEST = ".panderm-preresize.json"
_LOSSLESS = {"PNG": "PNG"}  # input format → output format; everything else becomes JPEG


def recommended_size(preprocess_spec) -> int:
    """Twice the largest side the model's own transform resizes to (448 for a 224 px model)."""
    return 2 * max(int(preprocess_spec.size), int(preprocess_spec.resize_to or 0))


@dataclass
class PreresizeSummary:
    n: int = 0
    resized: int = 0
    copied: int = 0
    skipped: int = 0
    bytes_before: int = 0  # all sources
    bytes_after: int = 0  # all outputs (written now or before)
    seconds: float = 0.0
    out: Path | None = None
    failed: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.resized + self.copied

    def line(self) -> str:
        mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
        return (f"preresize: {self.n} image(s): {self.written} written ({self.resized} resized, {self.copied} "
                f"copied as they were), {self.skipped} skipped (up to date); {mb(self.bytes_before)} → "
                f"{mb(self.bytes_after)}; {self.seconds:.1f} s → {self.out}")


def target_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """(w, h) with the shorter side `size` and the aspect ratio kept, or None when no downscaling is needed."""
    short = min(width, height)
    if short <= size:
        return None
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


def _output_format(src: Path) -> str:
    try:
        with Image.open(src) as img:
            return _LOSSLESS.get(img.format or "", "JPEG")
    except OSError:
        return "JPEG"


def _one(task: tuple[str, str, int, int]) -> tuple[str, int, int, str]:
    """Process one image: (status, source bytes, output bytes, error); status resized | copied | failed."""
    src, dst, size, quality = Path(task[0]), Path(task[1]), task[2], task[3]
    before = src.stat().st_size if src.exists() else 0
    try:
        img = open_image(src)  # EXIF orientation + RGB, as every loader here sees the image
        new = target_size(img.width, img.height, size)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        try:
            if new is None:
                # Already small: an exact copy (no re-encoding loss; open_image applies EXIF and mode as before).
                shutil.copyfile(src, tmp)
                status = "copied"
            else:
                img = img.resize(new, Image.Resampling.LANCZOS)
                fmt = _output_format(src)
                if fmt == "JPEG":
                    # 4:4:4 chroma: full-resolution colour (lesion borders), ~25 % larger than 4:2:0
                    img.save(tmp, format="JPEG", quality=quality, subsampling=0)
                else:
                    img.save(tmp, format=fmt)
                status = "resized"
            os.replace(tmp, dst)
        finally:
            if tmp.exists():
                tmp.unlink()
        return status, before, dst.stat().st_size, ""
    except (DataError, OSError) as exc:
        dst.unlink(missing_ok=True)  # never leave an output of an older source or other settings behind
        return "failed", before, 0, str(exc) if isinstance(exc, DataError) else f"{src}: {exc}"


def _workers(workers: int | None) -> int:
    if workers is not None:
        return max(0, int(workers))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _up_to_date(src: Path, dst: Path) -> bool:
    try:
        return dst.stat().st_mtime_ns > src.stat().st_mtime_ns
    except OSError:
        return False


def preresize(
    csv: str | os.PathLike,
    image_col: str,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    quality: int = 95,
    workers: int | None = None,
    max_image_pixels: int | None = None,
) -> PreresizeSummary:
    """Write the resized copies (see the module doc); raises DataError naming every bad row after the rest is done.

    `max_image_pixels`: the largest width x height opened (default: PIL's decompression-bomb limit, 178,956,970
    pixels; 0: no limit); a larger image is refused naming its row and pixel count.
    """
    with image_pixel_limit(max_image_pixels):
        return _preresize(csv, image_col, out, root=root, size=size, quality=quality, workers=workers)


def _preresize(csv, image_col, out, *, root, size, quality, workers) -> PreresizeSummary:
    start = time.perf_counter()
    if size < 1:
        raise DataError(f"the size must be a positive number of pixels, got {size}", param="size")
    if not 1 <= quality <= 100:
        raise DataError(f"the JPEG quality must be in 1..100, got {quality}", param="quality")
    csv = Path(csv)
    frame = read_csv(csv)
    require_columns(frame, [image_col], csv, {image_col: "image_col"})
    root = Path(root) if root is not None else csv.parent
    out = Path(out)
    # realpath: an `out` that is a symlink to the root (or the root itself spelled differently) is the root.
    if os.path.realpath(out) == os.path.realpath(root):
        raise DataError(f"the output folder {out} is the image root: the copies would overwrite the originals",
                        param="out")
    paths = resolve_paths(frame, image_col, root, csv)  # empty cells and NUL bytes named by row
    # Relative paths that stay under the root only: the copies keep the CSV's layout under `out`, and an absolute
    # or `../` path would put its copy outside `out` (where `out` as the root would not find it). A `~` is a folder
    # name here as in every door (never expanded).
    rel = [os.path.normpath(str(v).strip()) for v in frame[image_col].astype(str)]
    ids = frame.index.to_numpy()
    outside = [i for i, r in enumerate(rel) if os.path.isabs(r) or r == ".." or r.startswith(".." + os.sep)]
    if outside:
        raise DataError(f"{csv}: column {image_col!r}, row(s) {_rows(ids[outside])}: image path {rel[outside[0]]!r} "
                        "is not under the image root; the copies keep the CSV's layout under the output folder, so "
                        "the CSV's paths must be relative to the image root (rewrite them relative to a common "
                        "folder and give that as the root)", param="image_root")

    problems = [_probe(p) for p in paths]
    bad = [i for i, why in enumerate(problems) if why]
    if bad:
        too_large = any(problems[i].startswith("too large") for i in bad)
        raise DataError(f"{csv}: {len(bad)} of {len(paths)} image(s) cannot be used: "
                        + list_items([f"row {_rows([ids[i]])}: {paths[i]} [{problems[i]}]" for i in bad]),
                        param=PIXEL_LIMIT_PARAM if too_large else None)

    settings = {"size": int(size), "quality": int(quality), "version": 1}
    manifest = out / MANIFEST
    try:
        same_settings = json.loads(manifest.read_text()) == settings
    except (OSError, ValueError):
        same_settings = False

    summary = PreresizeSummary(out=out)
    tasks, task_rows, seen = [], [], set()
    for i, (src, r) in enumerate(zip(paths, rel)):
        dst = out / r
        if dst in seen:  # the same image in several rows: once is enough
            continue
        seen.add(dst)
        summary.n += 1
        if os.path.realpath(dst) == os.path.realpath(src):
            raise DataError(f"{csv}: row {_rows([ids[i]])}: output {dst} is the source image itself")
        if same_settings and _up_to_date(src, dst):
            summary.skipped += 1
            summary.bytes_before += src.stat().st_size
            summary.bytes_after += dst.stat().st_size
            continue
        tasks.append((str(src), str(dst), int(size), int(quality)))
        task_rows.append(i)

    out.mkdir(parents=True, exist_ok=True)
    if not same_settings:
        manifest.unlink(missing_ok=True)  # written back once every output matches the new settings
    n_workers = min(_workers(workers), len(tasks))
    if n_workers <= 1:
        results = [_one(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            results = list(pool.map(_one, tasks, chunksize=max(1, min(32, len(tasks) // (4 * n_workers)))))
    for i, (status, before, after, error) in zip(task_rows, results):
        summary.bytes_before += before
        if status == "failed":
            summary.failed.append(f"row {_rows([ids[i]])}: {error}")
            continue
        summary.bytes_after += after
        if status == "resized":
            summary.resized += 1
        else:
            summary.copied += 1
    # Every output now matches these settings (failed images have none): a rerun may skip what is up to date.
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps(settings))
    summary.seconds = time.perf_counter() - start
    if summary.failed:
        raise DataError(f"{csv}: {len(summary.failed)} image(s) could not be pre-resized (the other "
                        f"{summary.written + summary.skipped} are done): " + list_items(summary.failed))
    return summary
