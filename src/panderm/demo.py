"""The demo: every task on the bundled real sample, one short table each.

Without a model id it evaluates a tiny model with random weights built on the fly:
the numbers then only show that the pipeline runs, and every output says so.
"""
from __future__ import annotations

import time
from pathlib import Path

from .report import format_table, write_json
from .tasks.registry import TASKS

SAMPLE_SETS = {
    "HAM10000-sample": ("ham10000_sample", "ham10000_sample.csv"),
    "PAD-UFES-20-sample": ("pad_ufes20_sample", "pad_ufes20_sample.csv"),
    "PH2": ("ph2", "ph2.csv"),
}


def sample_root() -> Path:
    """The bundled sample: `$PANDERM_SAMPLE`, else `data/sample` of the source checkout this package runs from.

    A wheel does not carry the 7 MB of images; an installed (non-editable) package finds them through
    PANDERM_SAMPLE pointing at a checkout's `data/sample`.
    """
    import os

    from .errors import DataError

    given = os.environ.get("PANDERM_SAMPLE")
    if given:
        if (Path(given) / "ham10000_sample").is_dir():
            return Path(given)
        raise DataError(f"PANDERM_SAMPLE={given} does not hold the bundled sample (ham10000_sample/ is missing)")
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "data" / "sample"
        if (candidate / "ham10000_sample").is_dir():
            return candidate
    raise DataError("bundled sample not found: this install has no source checkout beside it; set "
                    "PANDERM_SAMPLE=PATH/TO/panderm/data/sample (the repository's data/sample folder), or install "
                    "from a checkout with `pip install -e .`")


def run_demo(model: str = "demo", out_dir: str | Path = "demo-output", device: str = "cpu",
             checkpoint: str | None = None, tasks: tuple[str, ...] = ("features",)) -> dict:
    """Feature extraction (when `tasks` holds "features") and each named task of `panderm.tasks.registry.TASKS`
    on the bundled sample; writes `out_dir/results.json` (one key per task) and returns its content."""
    from .data.tables import load_table
    from .features import extract_features
    from .models import load_encoder

    out_dir = Path(out_dir)
    root = sample_root()
    encoder = load_encoder(model, checkpoint=checkpoint, device=device)
    banner = "RANDOM WEIGHTS (demo model): numbers below only show the pipeline runs" if encoder.random_init else ""
    report: dict = {"model": encoder.describe(), "warning": banner or None}
    if banner:
        print(banner)
    if "features" in tasks:
        rows = []
        for name, (folder, csv) in SAMPLE_SETS.items():
            table = load_table(root / folder / csv, "image_path")
            t0 = time.perf_counter()
            res = extract_features(encoder, table.paths, "embed")
            seconds = time.perf_counter() - t0
            rows.append({"dataset": name, "images": len(table), "dim": res.array.shape[1],
                         "source": "cache" if res.from_cache else "encoded", "seconds": round(seconds, 3)})
        print("\nFeature extraction (kind=embed)")
        print(format_table(rows))
        report["features"] = rows
    for name in tasks:
        if name != "features":
            task = TASKS[name]
            report[task.report_key] = task.load().demo(encoder, root, out_dir)
    write_json(out_dir / "results.json", report)
    print(f"\nwrote {out_dir / 'results.json'}")
    return report
