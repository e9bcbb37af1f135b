"""Run every benchmark with one command; each prints its own table with ratios measured in the same run.

    python benchmarks/run_all.py                 # the settings docs/BENCHMARKS.md was made with (long on CPU)
    python benchmarks/run_all.py --quick         # small sizes: a few minutes, to check everything still runs
    python benchmarks/run_all.py --only linear_probe retrieval --out bench-output

Each benchmark's output goes to OUT/<name>.txt; a failing benchmark is reported and the others still run.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name → (full arguments, quick arguments)
SUITE: dict[str, tuple[list[str], list[str]]] = {
    "features": ([], ["--models", "demo"]),
    "decode": (["--vit"], ["--upscale", "0", "--repeats", "1"]),
    "large_images": ([], ["--n", "24", "--sizes", "1024", "--repeats", "1"]),
    "zeroshot": ([], ["--model", "demo"]),
    "retrieval": (["--markdown"], ["--n", "2000", "--methods", "chunked", "naive_count"]),
    "linear_probe": ([], ["--n", "2000", "--dim", "256", "--classes", "7", "--repeats", "1"]),
    "sae": (["--n", "50000"], ["--n", "4096", "--d", "64"]),
    "multimodal": ([], ["--steps", "2", "--batch", "4"]),
    "segmentation": ([], ["--width", "64", "--depth", "2", "--size", "32", "--warmup", "1", "--steps", "2"]),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    p.add_argument("--only", nargs="+", choices=sorted(SUITE), default=None)
    p.add_argument("--out", default="bench-output", help="folder for each benchmark's printed output")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    failed = []
    for name in args.only or list(SUITE):
        script = HERE / f"bench_{name}.py"
        if not script.is_file():
            print(f"-- {name}: {script.name} not found, skipped")
            continue
        extra = SUITE[name][1 if args.quick else 0]
        print(f"-- {name}: python {script.relative_to(HERE.parent)} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(script), *extra], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        (out / f"{name}.txt").write_text(r.stdout + (f"\n[stderr]\n{r.stderr}" if r.returncode else ""))
        print(r.stdout.rstrip())
        if r.returncode:
            failed.append(name)
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"   FAILED (exit {r.returncode}): {tail}")
        print(f"   {seconds:.1f} s → {out / (name + '.txt')}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
