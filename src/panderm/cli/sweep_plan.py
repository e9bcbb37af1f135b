"""What a sweep runs: the :class:`SweepPlan` (models × tasks × datasets), its cells with their run folders and
command lines, and the :class:`SweepResult` that :func:`panderm.cli.sweep_run.run_sweep` returns.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from ..analysis.compare import DEFAULT_METRICS, LP_SETTINGS, safe_name

TASKS = ("zeroshot", "linear-probe", "finetune")
_TRAINED = ("linear-probe", "finetune")


@dataclass
class DatasetSpec:
    """One dataset of one task: a zero-shot benchmark by name, and/or a CSV, with the flags it needs."""

    name: str
    csv: str | None = None
    benchmark: str | None = None
    root: str | None = None
    data_root: str | None = None
    classnames: str | None = None
    split: str | None = None
    args: list[str] = field(default_factory=list)

    def task_argv(self, task: str) -> list[str]:
        argv: list[str] = []
        if task == "zeroshot":
            if self.benchmark:
                argv += ["--benchmark", self.benchmark]
            if self.csv:
                argv += ["--csv", self.csv]
            if self.classnames and not self.benchmark:
                argv += ["--classnames", self.classnames]
            if self.data_root and not self.csv:
                argv += ["--data-root", self.data_root]
            root = self.root if self.root is not None else (self.data_root if self.benchmark and self.csv else None)
            if root is not None:
                argv += ["--root", root]
            if self.split:
                argv += ["--split", self.split]
        else:
            if not self.csv:
                raise DataError(f"{task} dataset {self.name!r} has no CSV: {task} needs a CSV with a split column "
                                "(train/val/test)", param="csv")
            argv += ["--csv", self.csv]
            if self.root is not None:
                argv += ["--root", self.root]
            if self.classnames:
                argv += ["--classnames", self.classnames]
        return argv + list(self.args)


@dataclass
class SweepPlan:
    """What to run: `models` × `tasks` × each task's `datasets`, every cell with `common_args` and its
    task's `task_args`; then the comparison settings."""

    models: list[str]
    tasks: list[str]
    datasets: dict[str, list[DatasetSpec]]
    common_args: list[str] = field(default_factory=list)
    task_args: dict[str, list[str]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    bootstrap: int = 1000
    seed: int = 42
    lp_settings: str = "primary"

    def __post_init__(self) -> None:
        if not self.models:
            raise DataError("a sweep needs at least one model", param="models")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise DataError(f"unknown task(s) {', '.join(unknown)}; a sweep runs {', '.join(TASKS)}", param="tasks")
        if not self.tasks:
            raise DataError("a sweep needs at least one task", param="tasks")
        for task in self.tasks:
            if not self.datasets.get(task):
                how = ("--benchmarks NAME[=CSV] (or --csv with --classnames)" if task == "zeroshot"
                       else "--csv [NAME=]FILE (a CSV with a train/val/test split column)")
                raise DataError(f"task {task} has no dataset: give {how}", param="datasets")
        from ..metrics import _resolve_metrics

        self.metrics = _resolve_metrics(list(self.metrics), 99)  # a misspelt metric fails now, not after the cells
        if self.lp_settings not in LP_SETTINGS:
            raise DataError(f"lp_settings must be one of {', '.join(LP_SETTINGS)}, got {self.lp_settings!r}")


@dataclass
class Cell:
    model: str
    task: str
    dataset: str
    run_dir: Path
    argv: list[str]  # the canonical command line (without --overwrite)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.task} / {self.dataset}"


@dataclass
class SweepResult:
    out_dir: Path
    cells: list[Cell]
    status: dict[str, str]  # run_dir -> ran / skipped / failed
    errors: dict[str, str]
    seconds: dict[str, float]
    compare: Any = None  # CompareResult, or None when the leaderboard was up to date / nothing finished
    compare_skipped: bool = False

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)

    def rows(self) -> list[dict]:
        return [{"model": c.model, "task": c.task, "dataset": c.dataset, "status": self.status[str(c.run_dir)],
                 "seconds": round(self.seconds.get(str(c.run_dir), 0.0), 1)} for c in self.cells]


# --------------------------------------------------------------------------- #
# Plan -> cells
# --------------------------------------------------------------------------- #
def _folder_names(values: Sequence[str]) -> dict[str, str]:
    """Safe, distinct folder names; two values that sanitise alike get a short hash each."""
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for v in values:
        name = safe_name(v)
        if name in taken and taken[name] != v:
            name = f"{name}_{hashlib.sha1(v.encode('utf-8')).hexdigest()[:6]}"
        taken[name] = v
        out[v] = name
    return out


def plan_cells(plan: SweepPlan, out_dir: str | os.PathLike) -> list[Cell]:
    """Every (model, task, dataset) cell of `plan` with its run folder and command line."""
    out_dir = Path(out_dir)
    model_dirs = _folder_names(plan.models)
    cells = []
    for model in plan.models:
        for task in plan.tasks:
            ds_dirs = _folder_names([d.name for d in plan.datasets[task]])
            for ds in plan.datasets[task]:
                run_dir = out_dir / model_dirs[model] / task / ds_dirs[ds.name]
                argv = [task, "--model", model, *ds.task_argv(task), *plan.common_args,
                        *plan.task_args.get(task, []), "--out", str(run_dir)]
                cells.append(Cell(model, task, ds.name, run_dir, argv))
    seen: dict[str, Cell] = {}
    for c in cells:
        if str(c.run_dir) in seen:
            raise DataError(f"two cells share the folder {c.run_dir}: {seen[str(c.run_dir)].label} and {c.label}; "
                            "give the datasets distinct names")
        seen[str(c.run_dir)] = c
    return cells
