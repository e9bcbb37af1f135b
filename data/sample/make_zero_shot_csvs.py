"""Build reference-format zero-shot CSVs from the bundled sample (run from the repository root).

The reference benchmarks index labels into their own class lists (docs/REFERENCE.md), which differ
from the sample's `label` column, so the diagnosis codes are mapped through
`panderm.data.benchmarks.code_to_label`. Image paths are relative to the repository root, as the
reference `src/main.py` expects (paths relative to the working directory).
"""
from pathlib import Path

import pandas as pd

from panderm.data.benchmarks import code_to_label

SAMPLE = Path("data/sample")
OUT = SAMPLE / "zero-shot-classification"


def convert(csv: Path, benchmark: str, code_col: str, out_name: str) -> None:
    frame = pd.read_csv(csv)
    out = pd.DataFrame({
        "image_path": [str(csv.parent / p) for p in frame["image_path"]],
        "label": [code_to_label(benchmark, c) for c in frame[code_col]],
        "diag": frame["diag"],
    })
    OUT.mkdir(parents=True, exist_ok=True)
    out.to_csv(OUT / out_name, index=False)


if __name__ == "__main__":
    convert(SAMPLE / "pad_ufes20_sample/pad_ufes20_sample.csv", "PAD-6", "diagnostic", "pad-zero-shot-test.csv")
    convert(SAMPLE / "ham10000_sample/ham10000_sample.csv", "HAM-7", "dx", "HAM-official-7-zero-shot-test.csv")
    convert(SAMPLE / "ph2/ph2.csv", "PH2-2", "diag", "ph2-2-zero-shot-test.csv")
