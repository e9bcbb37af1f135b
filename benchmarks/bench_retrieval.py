"""Benchmark the retrieval ranking step: chunked counting vs the full N x N matrix.

    PYTHONPATH=src python benchmarks/bench_retrieval.py --n 10000 30000 100000 --dim 768

Synthetic L2-normalised float32 image and text embeddings (text = image + noise,
cosine ~0.1, so ranks spread over hundreds of positions instead of all being 0).
One direction (image -> text) is ranked by three methods:

* ``chunked``       -- :func:`panderm.tasks.retrieval.rank_of_targets` (blockwise
                       matmul + counting; includes its input checks and L2 norms);
* ``naive_argsort`` -- the reference (open_clip ``get_clip_metrics``): full logits,
                       ``argsort(descending=True)``, ``where(ranking == i)``;
* ``naive_count``   -- full logits, then count scores above the diagonal: the
                       cheapest full-matrix method, i.e. a lower bound on time.

Naive methods run only while their estimated peak fits ``--naive-cap-gb``.

How memory is measured (honestly, torch allocations included): every
measurement runs in a fresh child process, which builds the embeddings, warms
up torch on a tiny problem, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs the ranking step once and reports
``VmHWM - VmRSS(before)``: the peak resident memory the step added on top of the
inputs. Without ``clear_refs`` the child falls back to ``ru_maxrss`` minus the
RSS before the step, which can only overstate the step.

Times are wall-clock on whatever else the machine is running; ``--repeats``
runs each measurement in several fresh children and keeps the fastest time and
the largest peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("chunked", "naive_argsort", "naive_count")

# Peak bytes per N^2 cell of the naive methods, measured with this script on CPU
# (N = 10k: 1536 MB and 1250 MB) plus a margin. argsort holds the float32 logits,
# int64 indices and the (ranking == i) mask; counting holds the logits, a bool
# mask and the int64 copy torch.sum makes of it.
NAIVE_BYTES_PER_CELL = {"naive_argsort": 16.5, "naive_count": 13.5}


# --------------------------------------------------------------------------- child side


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def make_embeddings(n: int, dim: int, seed: int):
    """Normalised float32 pairs, filled block by block so generation adds little peak."""
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.empty((n, dim), dtype=np.float32)
    txt = np.empty((n, dim), dtype=np.float32)
    noise = np.float32(10.0 / np.sqrt(dim))  # |noise| ~ 10 |img| -> cosine ~ 0.1
    for a in range(0, n, 4096):
        b = min(a + 4096, n)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = x + noise * rng.standard_normal((b - a, dim), dtype=np.float32)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        img[a:b], txt[a:b] = x, y
    return img, txt


def run_method(method: str, img, txt, chunk: int):
    import torch

    if method == "chunked":
        from panderm.tasks.retrieval import rank_of_targets

        return rank_of_targets(img, txt, chunk_size=chunk)
    n = img.shape[0]
    with torch.inference_mode():
        logits = torch.from_numpy(img) @ torch.from_numpy(txt).T
        if method == "naive_argsort":
            ranking = torch.argsort(logits, dim=1, descending=True)
            return torch.where(ranking == torch.arange(n)[:, None])[1].numpy()
        if method == "naive_count":
            diag = logits.diagonal().clone()
            return torch.sum(logits > diag[:, None], dim=1).numpy()
    raise ValueError(method)


def child_main(method: str, n: int, dim: int, chunk: int, seed: int, ranks_path: str) -> None:
    import resource

    import numpy as np

    img, txt = make_embeddings(n, dim, seed)
    # Warm-up: thread pools, MKL/oneDNN handles and lazy imports are not the step's memory.
    w_img, w_txt = make_embeddings(min(n, 512), dim, seed + 1)
    run_method(method, w_img, w_txt, min(chunk, 128))
    del w_img, w_txt
    gc.collect()

    exact = _reset_peak()
    before_kb = _status_kb("VmRSS") or 0
    t0 = time.perf_counter()
    ranks = run_method(method, img, txt, chunk)
    seconds = time.perf_counter() - t0
    if exact:
        peak_kb = _status_kb("VmHWM") or 0
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    np.save(ranks_path, np.asarray(ranks, dtype=np.int64))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": max(peak_kb - before_kb, 0) / 1024,
                "inputs_mb": 2 * img.nbytes / 2**20,
                "exact_peak": exact,
            }
        )
    )


# --------------------------------------------------------------------------- parent side


def _mem_available_gb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def measure(method: str, n: int, args, ranks_path: Path) -> dict:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--_child", method,
        "--n", str(n), "--dim", str(args.dim), "--chunk-size", str(args.chunk_size),
        "--seed", str(args.seed), "--_ranks", str(ranks_path),
    ]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    best: dict | None = None
    for _ in range(args.repeats):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.timeout:.0f} s"}
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["killed"]
            return {"error": f"exit {proc.returncode}: {tail[0]}"}
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        if best is None:
            best = rec
        else:
            best["seconds"] = min(best["seconds"], rec["seconds"])
            best["peak_mb"] = max(best["peak_mb"], rec["peak_mb"])
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10000, 20000, 30000, 100000], help="numbers of pairs")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--naive-cap-gb", type=float, default=8.0, help="skip naive runs estimated above this peak")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--repeats", type=int, default=1, help="fresh child processes per measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of plain text")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_ranks", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:
        child_main(args._child, args.n[0], args.dim, args.chunk_size, args.seed, args._ranks)
        return 0

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from panderm.report import format_table, write_json

    cap_gb = min(args.naive_cap_gb, 0.8 * _mem_available_gb())
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            results: dict[str, dict] = {}
            for method in args.methods:
                est_gb = NAIVE_BYTES_PER_CELL.get(method, 0.0) * n * n / 2**30
                if est_gb > cap_gb:
                    results[method] = {"skipped": f"est. {est_gb:.1f} GB > cap {cap_gb:.1f} GB"}
                    continue
                print(f"[bench] n={n} {method} ...", file=sys.stderr, flush=True)
                results[method] = measure(method, n, args, Path(tmp) / f"{method}-{n}.npy")
            ref = Path(tmp) / f"naive_argsort-{n}.npy"
            for method in args.methods:
                rec = results[method]
                row = {"N": n, "method": method}
                if "skipped" in rec or "error" in rec:
                    row.update({"time_s": "-", "peak_MB": "-", "note": rec.get("skipped") or rec.get("error")})
                    rows.append(row)
                    continue
                row["time_s"] = f"{rec['seconds']:.2f}"
                row["Mscores/s"] = f"{n * n / rec['seconds'] / 1e6:.0f}"  # flat if time grows as N^2
                row["peak_MB"] = f"{rec['peak_mb']:.0f}"
                for base in ("naive_argsort", "naive_count"):
                    other = results.get(base, {})
                    ok = "seconds" in other
                    row[f"time/{base}"] = f"{rec['seconds'] / other['seconds']:.2f}" if ok else "-"
                    row[f"mem/{base}"] = f"{rec['peak_mb'] / max(other['peak_mb'], 1e-9):.3f}" if ok else "-"
                if method != "naive_argsort" and ref.exists():
                    diff = int(np.sum(np.load(ref) != np.load(Path(tmp) / f"{method}-{n}.npy")))
                    row["ranks!=ref"] = f"{diff}/{n}"
                else:
                    row["ranks!=ref"] = "-"
                row["note"] = f"inputs {rec['inputs_mb']:.0f} MB" + ("" if rec["exact_peak"] else ", peak approx.")
                rows.append(row)

    cols = ["N", "method", "time_s", "Mscores/s", "peak_MB", "time/naive_argsort", "mem/naive_argsort",
            "time/naive_count", "mem/naive_count", "ranks!=ref", "note"]
    header = (
        f"dim={args.dim} chunk_size={args.chunk_size} threads={os.cpu_count()} "
        f"torch threads={__import__('torch').get_num_threads()} total {time.perf_counter() - t_start:.0f} s "
        f"load avg {load_start:.1f} -> {os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f}; "
        "peak_MB = peak RSS added by the ranking step (inputs excluded)"
    )
    print(header)
    if args.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join("---" for _ in cols) + "|")
        for r in rows:
            print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    else:
        print(format_table(rows, cols))
    if args.json:
        write_json(args.json, {"args": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
