"""End-to-end `extract_features` throughput against the model-only bound, measured in one run.

model-only: the same model on pre-decoded, pre-transformed tensors (no I/O, no decode).
loader-only: the same DataLoader (decode, resize, normalise) with no model: the I/O bound.
end-to-end: CSV paths → DataLoader (decode, resize, normalise) → model → float32 .npy.
Also: a cache hit, and peak RSS growth when the image list is 4× longer (streamed output).

    python benchmarks/bench_features.py                 # tiny + ViT-B/16-sized random models
    python benchmarks/bench_features.py --models demo   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panderm.data.images import open_image  # noqa: E402
from panderm.data.tables import load_table  # noqa: E402
from panderm.features import default_workers, extract_features  # noqa: E402
from panderm.models import load_encoder  # noqa: E402
from panderm.report import format_table  # noqa: E402

SAMPLE_CSVS = ["ham10000_sample/ham10000_sample.csv", "pad_ufes20_sample/pad_ufes20_sample.csv", "ph2/ph2.csv"]


def sample_paths() -> list[Path]:
    paths = []
    for csv in SAMPLE_CSVS:
        paths += load_table(REPO / "data/sample" / csv, "image_path").paths
    return paths


def model_only(encoder, paths, batch_size: int, repeats: int = 2) -> float:
    x = torch.stack([encoder.preprocess(open_image(p)) for p in paths])
    best = float("inf")
    with torch.inference_mode():
        encoder.encode_image(x[:batch_size])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in range(0, len(x), batch_size):
                encoder.encode_image(x[s:s + batch_size])
            best = min(best, time.perf_counter() - t0)
    return len(paths) / best


def loader_only(encoder, paths, batch_size: int, workers) -> float:
    """Decode + preprocess throughput of the same DataLoader, no model: the I/O bound."""
    from panderm.features import _loader

    t0 = time.perf_counter()
    for _ in _loader(encoder, paths, batch_size, workers, None):
        pass
    return len(paths) / (time.perf_counter() - t0)


def end_to_end(encoder, paths, batch_size: int, workers, cache_dir) -> tuple[float, float]:
    t0 = time.perf_counter()
    extract_features(encoder, paths, batch_size=batch_size, num_workers=workers, cache=True, cache_dir=cache_dir)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = extract_features(encoder, paths, batch_size=batch_size, num_workers=workers, cache=True, cache_dir=cache_dir)
    warm = time.perf_counter() - t0
    assert res.from_cache
    return len(paths) / cold, cold / max(warm, 1e-9)


def peak_rss_child(model: str, repeat: int, batch_size: int) -> float:
    """Peak RSS (MiB) of a fresh process extracting the sample `repeat` times over."""
    code = f"""
import resource, sys, tempfile
sys.path.insert(0, {str(REPO / 'src')!r}); sys.path.insert(0, {str(REPO / 'benchmarks')!r})
from bench_features import sample_paths
from panderm.features import extract_features
from panderm.models import load_encoder
enc = load_encoder({model!r}, allow_random_init=True)
paths = sample_paths() * {repeat}
extract_features(enc, paths, batch_size={batch_size}, num_workers=0, cache=False, cache_dir=tempfile.gettempdir())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["demo", "ViT-B-16"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    paths = sample_paths()
    rows = []
    for model in args.models:
        enc = load_encoder(model, allow_random_init=True)
        bound = model_only(enc, paths, args.batch_size)
        io_bound = loader_only(enc, paths, args.batch_size, args.workers)
        with tempfile.TemporaryDirectory() as cache:
            e2e, cache_speedup = end_to_end(enc, paths, args.batch_size, args.workers, cache)
        rows.append({"model": model, "images": len(paths), "input": enc.preprocess_spec.size,
                     "workers": args.workers if args.workers is not None else default_workers(enc.device),
                     "model-only img/s": round(bound, 1), "loader-only img/s": round(io_bound, 1),
                     "end-to-end img/s": round(e2e, 1), "e2e / model-only": round(e2e / bound, 3),
                     "e2e / min(bounds)": round(e2e / min(bound, io_bound), 3),
                     "cache hit speed-up": round(cache_speedup, 1)})
    print(format_table(rows))
    mem = [{"images": len(paths) * r, "peak RSS MiB": round(peak_rss_child("demo", r, args.batch_size), 1)} for r in (1, 4)]
    print()
    print(format_table(mem))
    print(f"peak RSS growth for 4x the images: {mem[1]['peak RSS MiB'] - mem[0]['peak RSS MiB']:+.1f} MiB")
    print(f"cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": rows, "memory": mem}, indent=2))


if __name__ == "__main__":
    main()
