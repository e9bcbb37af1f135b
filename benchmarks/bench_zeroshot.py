"""Wall time of a multi-benchmark zero-shot run vs the sum of its model-only encode times.

The run (validation, text classifier, extraction through the DataLoader, metrics with
1000 bootstrap resamples, report files) on the bundled PAD-6, HAM-7 and PH2-2 sample
benchmarks, with a cold feature cache, against the same model on pre-decoded tensors.

    python benchmarks/bench_zeroshot.py --model ViT-B-16
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_features import model_only  # noqa: E402
from panderm.data.benchmarks import get_benchmark  # noqa: E402
from panderm.models import load_encoder  # noqa: E402
from panderm.report import format_table, write_report  # noqa: E402
from panderm.tasks import zeroshot  # noqa: E402

SETS = (("PAD-6", "pad-zero-shot-test.csv"), ("HAM-7", "HAM-official-7-zero-shot-test.csv"),
        ("PH2-2", "ph2-2-zero-shot-test.csv"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    enc = load_encoder(args.model, allow_random_init=True)
    folder = REPO / "data/sample/zero-shot-classification"
    t0 = time.perf_counter()
    datasets = [zeroshot.build_dataset(folder / csv, benchmark=get_benchmark(b), root=REPO) for b, csv in SETS]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        results = zeroshot.run(enc, datasets, batch_size=args.batch_size, cache_dir=cache, cache=True)
        write_report(results, out, {}, enc.random_init)
    wall = time.perf_counter() - t0
    encode = sum(len(d.table) / model_only(enc, d.table.paths, args.batch_size, repeats=1) for d in datasets)
    print(format_table([{"model": args.model, "images": sum(len(d.table) for d in datasets),
                         "run wall s": round(wall, 2), "model-only encode s": round(encode, 2),
                         "ratio (encode / wall)": round(encode / wall, 3)}]))


if __name__ == "__main__":
    main()
