"""Probe fit time: the reference torch L-BFGS probe vs scikit-learn's lbfgs LogisticRegression, same data, same run.

Synthetic class-clustered features (N×D, K classes). Both fit on the same train rows; sklearn uses the
nearest equivalent penalty (squared L2, C = D·K/100 per the reference heuristic) — the objectives differ
(the reference's L2 term is unsquared), so this compares cost, not solutions.

    python benchmarks/bench_linear_probe.py --n 10000 --dim 1024 --classes 7 128
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from panderm.report import format_table  # noqa: E402
from panderm.tasks.linear_probe import LogisticRegressionProbe  # noqa: E402


def data(n: int, d: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = 0.1 * rng.normal(size=(k, d)).astype(np.float32)  # overlapping classes: a real optimisation
    y = rng.integers(0, k, size=n)
    x = centers[y] + 3.0 * rng.normal(size=(n, d)).astype(np.float32)
    return x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--classes", type=int, nargs="+", default=[7, 128])
    args = p.parse_args()
    from sklearn.linear_model import LogisticRegression

    rows = []
    for k in args.classes:
        x, y = data(args.n, args.dim, k)
        t0 = time.perf_counter()
        probe = LogisticRegressionProbe().fit(x, y)
        ours = time.perf_counter() - t0
        c = args.dim * k / 100
        t0 = time.perf_counter()
        sk = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x, y)
        theirs = time.perf_counter() - t0
        rows.append({"N": args.n, "D": args.dim, "K": k, "torch L-BFGS s": round(ours, 2),
                     "iters": probe.n_iter_, "sklearn lbfgs s": round(theirs, 2), "sk iters": int(np.max(sk.n_iter_)),
                     "ours / sklearn": round(ours / theirs, 3),
                     "train acc ours": round(float((probe.predict(x) == y).mean()), 4),
                     "train acc sk": round(float((sk.predict(x) == y).mean()), 4)})
    print(format_table(rows))


if __name__ == "__main__":
    main()
