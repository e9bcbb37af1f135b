"""End to end on large JPEGs: `panderm features` (reduced-size JPEG decoding, the default) vs the reference door.

Researchers' archives hold dermoscopic photos of 1000-4000 px; a 224 px model sees a small fraction of those
pixels, and on CPU the full JPEG decode costs more than the model. `panderm` decodes at the smallest DCT scale
(1/2, 1/4, 1/8) whose short side is still at least twice the model input; the reference door
(`src/export_visual_features.py`) decodes fully, as the reference does. This script runs both back to back as a
user would (fresh processes, no feature cache, same batch size, each its default workers), `--repeats` times in
alternating order, and prints from the same run:

- wall time of each and the ratio panderm / door (median of the paired ratios; the goal is <= 0.5);
- the feature deviation of the reduced decoding: cosine and max |delta| of `panderm features` vs
  `panderm features --full-decode` (same model, same preprocessing; the goal is cosine >= 0.9998).

Images: `--folder DIR` (every .jpg/.jpeg under it), or by default the bundled real HAM10000 / PAD-UFES-20 / PH2
images enlarged to 1024, 2048, 3072 and 3872 px on the long side in turn (`--sizes`; Lanczos, JPEG quality 92;
the range of the 555 held-out photos of issue 17, 1022x767 to 3872x2592) to stand in for full-resolution
originals: their decode cost is realistic, their fine detail is interpolated. The model is a small
open_clip ViT with a 224 px input and random weights (the model cost is not what is measured), or `--model ID`.

    python benchmarks/bench_large_images.py                      # 555 images of 1024-3872 px, 3 repeats
    python benchmarks/bench_large_images.py --folder /data/isic --n 500 --model PanDerm2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ["ham10000_sample/ham10000_sample.csv", "pad_ufes20_sample/pad_ufes20_sample.csv", "ph2/ph2.csv"]
# Small enough that decoding, not the model, is what costs; the input size is the common 224 px.
BENCH_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_images(folder: Path, n: int, sizes: list[int]) -> list[str]:
    """`n` bundled real images enlarged to the long sides `sizes` (in turn), saved as JPEG."""
    from PIL import Image

    sources = []
    for rel in SAMPLES:
        csv = REPO / "data" / "sample" / rel
        sources += [csv.parent / p for p in pd.read_csv(csv)["image_path"]]
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        src = sources[i % len(sources)]
        with Image.open(src) as img:
            img = img.convert("RGB")
            scale = sizes[i % len(sizes)] / max(img.size)
            big = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
        name = f"large_{i:04d}.jpg"
        big.save(folder / name, quality=92)
        names.append(name)
    return names


def _run(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--folder", default=None, help="folder of large JPEGs (default: built from the bundled sample)")
    ap.add_argument("--n", type=int, default=555, help="images (default: 555, the size of the held-out set of issue 17)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 3072, 3872], metavar="PX",
                    help="long sides of the built images, in turn (default: 1024 2048 3072 3872, the range of the "
                         "held-out set of issue 17)")
    ap.add_argument("--repeats", type=int, default=3, help="paired runs (default: 3)")
    ap.add_argument("--model", default=None, help="model id (default: a 224 px open_clip ViT, random weights)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per batch, both runs (default: 64)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="panderm-large-"))
    if args.folder:
        root = Path(args.folder).resolve()
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        names = names[:args.n]
    else:
        root = work / "images"
        names = build_images(root, args.n, args.sizes)
    csv = work / "images.csv"
    pd.DataFrame({"image_path": names}).to_csv(csv, index=False)
    model = args.model
    if model is None:
        from panderm.models.demo import write_openclip_dir

        model = f"local-dir:{write_openclip_dir(work / 'model', BENCH_CFG, seed=0)}"

    py = sys.executable
    panderm = [py, "-m", "panderm", "features", "--model", model, "--csv", str(csv), "--root", str(root),
               "--no-cache", "--device", "cpu", "--batch-size", str(args.batch_size), "--allow-random-init", "-q"]
    door = [py, "src/export_visual_features.py", "--model_name", model, "--csv_path", str(csv), "--img_col",
            "image_path", "--data_root", str(root), "--batch_size", str(args.batch_size), "--device", "cpu"]
    times = {"panderm": [], "door": []}
    for r in range(args.repeats):
        # a fresh cache folder each run: the door has no --no-cache flag, and nothing may be served from disk
        order = ["panderm", "door"] if r % 2 == 0 else ["door", "panderm"]
        for which in order:
            env = {**os.environ, "PANDERM_CACHE": str(work / f"cache-{which}-{r}")}
            if which == "panderm":
                times[which].append(_run([*panderm, "--out", str(work / f"reduced-{r}.npy")], env))
            else:
                times[which].append(_run([*door, "--output_dir", str(work / f"door-{r}")], env))
    env = {**os.environ, "PANDERM_CACHE": str(work / "cache-full")}
    _run([*panderm, "--full-decode", "--out", str(work / "full.npy")], env)

    reduced = np.load(work / "reduced-0.npy").astype(np.float64)
    full = np.load(work / "full.npy").astype(np.float64)
    cos = (reduced * full).sum(1) / (np.linalg.norm(reduced, axis=1) * np.linalg.norm(full, axis=1))
    ratios = [p / d for p, d in zip(times["panderm"], times["door"])]
    from PIL import Image

    sizes = []
    for name in names:
        with Image.open(root / name) as img:
            sizes.append(img.size)
    example = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
    result = {
        "n_images": len(names), "smallest": list(example[0]), "largest": list(example[1]), "model": model if args.model else "224 px ViT (random)",
        "repeats": args.repeats, "cpus": os.cpu_count(),
        "seconds_panderm": times["panderm"], "seconds_door": times["door"],
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "images_per_s_panderm": len(names) / statistics.median(times["panderm"]),
        "images_per_s_door": len(names) / statistics.median(times["door"]),
        "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
        "max_abs_diff": float(np.abs(reduced - full).max()),
    }
    print(f"{len(names)} JPEGs of {example[0][0]}x{example[0][1]} to {example[1][0]}x{example[1][1]} px, "
          f"{args.repeats} paired runs, {os.cpu_count()} CPUs")
    print(f"{'run':<34}{'median s':>10}{'images/s':>10}")
    print(f"{'reference door (full decode)':<34}{statistics.median(times['door']):>10.2f}"
          f"{result['images_per_s_door']:>10.1f}")
    print(f"{'panderm features (reduced decode)':<34}{statistics.median(times['panderm']):>10.2f}"
          f"{result['images_per_s_panderm']:>10.1f}")
    print(f"ratio panderm / door: {result['ratio_median']:.2f} (paired runs {result['ratio_min']:.2f}-"
          f"{result['ratio_max']:.2f}); goal <= 0.5")
    print(f"features vs --full-decode: cosine min {result['cosine_min']:.6f}, mean {result['cosine_mean']:.6f}, "
          f"max |delta| {result['max_abs_diff']:.2e}; goal cosine >= 0.9998")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
