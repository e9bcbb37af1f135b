"""The reference `src/main.py` output layout, so published tables can be matched file for file.

- `<logs>/<name>/out.log` and `params.txt`; a run aborts if `out.log` exists.
- `<logs>/<name>/checkpoints/results.jsonl`: one JSON line of metrics per evaluation.
- `<logs>/<DATASET-FOLDER>/<model>.csv`: per-sample predictions. This path does not hold the run name, so
  runs with different names overwrite each other's file (the reference's layout, kept so scripts find it);
  every run also keeps its own copy in `<logs>/<name>/predictions/<DATASET-FOLDER>/<model>.csv`, and replacing
  another run's file is a warning line.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import PandermError
from ..report import append_jsonl, atomic_path, claim_dir, write_csv


def experiment_name(model: str, lr: float, batch_size: int, workers: int, precision: str) -> str:
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    return f"{stamp}-model_{model.replace('/', '-')}-lr_{lr}-b_{batch_size}-j_{workers}-p_{precision}"


class ReferenceLogs:
    def __init__(self, logs: str | os.PathLike, name: str, params: dict):
        self.logs = Path(logs)
        self.run_dir = self.logs / name
        if (self.run_dir / "out.log").exists():
            raise PandermError(f"Experiment already exists: {self.run_dir}; choose another name", param="name")
        claim_dir(self.run_dir)  # removed again if the run fails on bad input
        with atomic_path(self.run_dir / "params.txt") as tmp:
            tmp.write_text("".join(f"{k}: {v}\n" for k, v in sorted(params.items())))
        self._handler = logging.FileHandler(self.run_dir / "out.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
        logging.getLogger().addHandler(self._handler)

    def log_metrics(self, metrics: dict, epoch: int = 0) -> None:
        # open_clip prints every value as f"{round(v, 4):.4f}", integers included ("epoch: 0.0000").
        line = "\t".join(f"{k}: {round(v, 4):.4f}" if isinstance(v, (int, float)) else f"{k}: {v}"
                         for k, v in metrics.items())
        logging.getLogger("panderm").info("Eval Epoch: %d %s", epoch, line)
        append_jsonl(self.run_dir / "checkpoints" / "results.jsonl", metrics)

    def per_sample_csv(self, folder: str, model_short: str) -> Path:
        return self.logs / folder / f"{model_short}.csv"

    def write_per_sample(self, folder: str, model_short: str, frame) -> Path:
        """The reference's shared per-sample CSV plus this run's own copy (which no other run replaces)."""
        shared = self.per_sample_csv(folder, model_short)
        if shared.is_file():
            logging.getLogger("panderm").warning(
                "%s exists (another run, or an earlier one, wrote it) and is replaced as the reference does; "
                "this run's copy is also in %s", shared, self.run_dir / "predictions" / folder)
        write_csv(self.run_dir / "predictions" / folder / f"{model_short}.csv", frame)
        return write_csv(shared, frame)

    def close(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
