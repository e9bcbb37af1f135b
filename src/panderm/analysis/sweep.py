"""Model × task × dataset sweeps (`panderm sweep`): every cell its own run folder, then one leaderboard.

A sweep is a :class:`SweepPlan`: models, tasks, the datasets of each task, and the flags every cell gets.
:func:`run_sweep` turns it into cells ``<out>/<model>/<task>/<dataset>``, each one ordinary panderm run made
in-process through ``panderm.cli.main([...])`` (so a cell is exactly the command line it records in its
``results.json`` provenance), and then calls :func:`panderm.analysis.compare.compare_runs` on the finished
cells, writing the leaderboard under ``<out>/compare``.

- A cell whose ``results.json`` is present and records the cell's own command line is finished: a rerun
  skips it ("skipped N finished cells"); a cell whose command changed, or that failed or was interrupted, is
  run again (with ``--overwrite``).
- A cell that fails is reported in one line and the others go on; the sweep ends with an error line
  counting the failures, after the leaderboard of the cells that finished.
- Features are cached by the tasks themselves, keyed by the encoder fingerprint and the images: cells that
  share a model and images (zero-shot and linear probe on one CSV, or a rerun) reuse them. Give ``--cache-dir``
  to keep the cache in one known place.
- The leaderboard is recomputed only when a cell changed (its inputs are recorded in
  ``<out>/compare/results.json``).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError, PandermError
from .compare import DEFAULT_METRICS, LP_SETTINGS, compare_runs, input_signature, safe_name

__all__ = ["TASKS", "DatasetSpec", "SweepPlan", "Cell", "SweepResult", "plan_cells", "run_sweep", "load_config",
           "plan_from_config"]

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


def recorded_argv(run_dir: Path) -> list[str] | None:
    """The command line a finished run recorded (provenance.command, without the program and --overwrite)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        command = data["provenance"]["command"]
        words = shlex.split(command)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [w for w in words[1:] if w != "--overwrite"]


def is_finished(cell: Cell) -> bool:
    """results.json is there and records this cell's command line."""
    return recorded_argv(cell.run_dir) == [w for w in cell.argv if w != "--overwrite"]


def _check_argv(cells: list[Cell]) -> None:
    """Parse every cell's command line before running any: a bad flag is one line naming the cell."""
    from ..cli import build_parser

    parser = build_parser()
    for cell in cells:
        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(cell.argv)
        except SystemExit:
            lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
            why = lines[-1] if lines else "invalid command line"
            raise PandermError(f"cell {cell.label}: {why} (command: panderm {shlex.join(cell.argv)})") from None


class _Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (the last error line of a cell)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer_text = io.StringIO()

    def write(self, s: str) -> int:
        self.buffer_text.write(s)
        try:
            self.stream.write(s)
        except ValueError:  # the real stream was closed (a test harness)
            pass
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(ValueError):
            self.stream.flush()

    def isatty(self) -> bool:
        return False


def _error_line(text: str, fallback: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("panderm: error:"):
            return ln[len("panderm: error:"):].strip()
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln
    return fallback


def _run_cell(cell: Cell) -> tuple[str, str | None]:
    """Run one cell in-process; ('ran', None) or ('failed', one line). Ctrl-C stops the sweep."""
    from .. import cli
    from ..progress import is_quiet
    from ..report import forget_claimed

    argv = list(cell.argv)
    if cell.run_dir.is_dir() and any(cell.run_dir.iterdir()):
        argv.append("--overwrite")  # an unfinished or outdated cell: run it again in place
    cell.run_dir.parent.mkdir(parents=True, exist_ok=True)  # a failed cell removes only its own folder
    old_argv = sys.argv
    sys.argv = ["panderm", *argv]  # what the cell's provenance records as its command
    tee = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee):
            rc = cli.main(argv + ["-q"] if is_quiet() else argv)  # each cell sets up logging anew
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # a bug in a task: report it, keep going
        forget_claimed()
        return "failed", f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        sys.argv = old_argv
    forget_claimed()
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        return "failed", _error_line(tee.buffer_text.getvalue(), f"exit status {rc}")
    if not (cell.run_dir / "results.json").is_file():
        return "failed", "the run wrote no results.json"
    return "ran", None


# --------------------------------------------------------------------------- #
# Sweep
# --------------------------------------------------------------------------- #
def _remove_empty_parents(run_dir: Path, out_dir: Path) -> None:
    """Remove the empty folders a failed cell leaves between its run folder and the sweep's folder."""
    for folder in (run_dir, *run_dir.parents):
        if folder == out_dir or out_dir not in folder.parents:
            break
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def _compare_up_to_date(compare_dir: Path, dirs: list[Path], settings: dict) -> bool:
    path = compare_dir / "results.json"
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if old.get("settings") != settings or old.get("inputs") != input_signature(dirs):
        return False
    return all((compare_dir / f).is_file() for f in (old.get("files") or {}).values())


def run_sweep(plan: SweepPlan, out_dir: str | os.PathLike, compare: bool = True, echo=print) -> SweepResult:
    """Run every cell of `plan` under `out_dir` (skipping finished ones), then the leaderboard.

    `echo` receives the progress lines (default: print). Returns a :class:`SweepResult`; failures are in
    ``errors`` (the caller decides how to end).
    """
    from ..report import write_json

    out_dir = Path(out_dir)
    cells = plan_cells(plan, out_dir)
    _check_argv(cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    finished = [c for c in cells if is_finished(c)]
    for c in finished:
        status[str(c.run_dir)] = "skipped"
    todo = [c for c in cells if str(c.run_dir) not in status]
    echo(f"sweep: {len(cells)} cells ({len(plan.models)} models × {len(plan.tasks)} tasks), "
         f"skipped {len(finished)} finished cells, {len(todo)} to run")
    for i, cell in enumerate(todo, 1):
        echo(f"[{i}/{len(todo)}] {cell.label}: panderm {shlex.join(cell.argv)}")
        t0 = time.perf_counter()
        state, why = _run_cell(cell)
        seconds[str(cell.run_dir)] = time.perf_counter() - t0
        status[str(cell.run_dir)] = state
        if why:
            errors[str(cell.run_dir)] = why
            echo(f"cell {cell.label} FAILED: {why}")
            _remove_empty_parents(cell.run_dir, out_dir)
    result = SweepResult(out_dir, cells, status, errors, seconds)
    write_json(out_dir / "sweep.json", {
        "plan": asdict(plan),
        "cells": [{"model": c.model, "task": c.task, "dataset": c.dataset, "run_dir": str(c.run_dir),
                   "path": c.run_dir.relative_to(out_dir).as_posix(),
                   "command": "panderm " + shlex.join(c.argv), "status": status[str(c.run_dir)],
                   "error": errors.get(str(c.run_dir))} for c in cells],
    })
    done = [c for c in cells if status[str(c.run_dir)] in ("ran", "skipped")]
    if compare and done:
        dirs = [c.run_dir for c in done]
        settings = {"metrics": list(plan.metrics), "n_resamples": int(plan.bootstrap), "seed": int(plan.seed),
                    "multi_class": "ovr", "lp_settings": plan.lp_settings}
        compare_dir = out_dir / "compare"
        if _compare_up_to_date(compare_dir, dirs, settings):
            result.compare_skipped = True
            echo(f"leaderboard up to date: {compare_dir / 'leaderboard.md'} (no cell changed)")
        else:
            names = {str(c.run_dir): c.dataset for c in done if c.task in _TRAINED}
            result.compare = compare_runs(dirs, compare_dir, metrics=plan.metrics, n_resamples=plan.bootstrap,
                                          seed=plan.seed, lp_settings=plan.lp_settings, dataset_names=names)
    elif compare:
        echo("no cell finished: no leaderboard")
    return result


# --------------------------------------------------------------------------- #
# Config files
# --------------------------------------------------------------------------- #
CONFIG_KEYS = ("models", "tasks", "benchmarks", "data_root", "csv", "classnames", "root", "datasets", "args",
               "device", "batch_size", "cache_dir", "bootstrap", "seed", "metrics", "lp_settings", "out")


def load_config(path: str | os.PathLike) -> dict:
    """A sweep config: JSON (``.json``) or YAML (``.yaml`` / ``.yml``, read with PyYAML) holding the keys of
    :data:`CONFIG_KEYS` (see docs/ANALYSIS.md)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sweep config not found: {path}", param="config")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise DataError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write the config as "
                            "JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: a sweep config is a mapping of keys ({', '.join(CONFIG_KEYS)})")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    return data


def _as_args(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise DataError(f"{where} must be a list of flags or one string of flags, got {type(value).__name__}")


def _named(value, where: str) -> list[tuple[str | None, str]]:
    """[NAME=]VALUE entries (a list of strings, or a NAME -> VALUE mapping) as (name or None, value)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, v in value.items()]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where} must be a list or a mapping, got {type(value).__name__}")
    out = []
    for v in value:
        v = str(v)
        name, sep, rest = v.partition("=")
        out.append((name, rest) if sep and name and rest else (None, v))
    return out


def plan_from_config(config: dict) -> SweepPlan:
    """A :class:`SweepPlan` from a config mapping (a loaded config file updated with the command line's flags).

    Datasets: ``benchmarks`` (zero-shot benchmarks, ``NAME`` or ``NAME=CSV``; images relative to
    ``data_root``), ``csv`` (``[NAME=]FILE`` with a train/val/test split: the linear-probe and finetune
    datasets, and zero-shot ones on their test split when ``classnames`` is given), or per task
    ``datasets: {task: {NAME: {csv, benchmark, root, data_root, classnames, split, args}}}``, which replaces
    the others for that task.
    """
    from ..data.benchmarks import get_benchmark

    models = [str(m) for m in (config.get("models") or [])]
    tasks = [str(t) for t in (config.get("tasks") or ["zeroshot"])]
    data_root = config.get("data_root")
    datasets: dict[str, list[DatasetSpec]] = {t: [] for t in tasks}
    for name, csv in _named(config.get("benchmarks"), "benchmarks"):
        bench_name = name or csv
        if name is None:
            csv = None
        get_benchmark(bench_name)  # an unknown name is one line now, not one failed cell per model
        if "zeroshot" in datasets:
            datasets["zeroshot"].append(DatasetSpec(name=bench_name, benchmark=bench_name, csv=csv,
                                                    data_root=str(data_root) if data_root else "."))
    for name, csv in _named(config.get("csv"), "csv"):
        ds_name = name or Path(csv).stem
        for task in tasks:
            if task in _TRAINED:
                datasets[task].append(DatasetSpec(name=ds_name, csv=csv, root=config.get("root"),
                                                  classnames=config.get("classnames")))
            elif task == "zeroshot" and config.get("classnames"):
                datasets[task].append(DatasetSpec(name=ds_name, csv=csv, root=config.get("root"),
                                                  classnames=str(config["classnames"]), split="test"))
    per_task = config.get("datasets") or {}
    if not isinstance(per_task, dict):
        raise DataError("datasets must map a task to {NAME: {csv, benchmark, root, ...}}")
    for task, entries in per_task.items():
        if task not in TASKS:
            raise DataError(f"datasets: unknown task {task!r}; a sweep runs {', '.join(TASKS)}")
        if not isinstance(entries, dict):
            raise DataError(f"datasets.{task} must map a dataset name to its settings")
        specs = []
        for name, entry in entries.items():
            entry = {"csv": entry} if isinstance(entry, str) else dict(entry or {})
            allowed = {"csv", "benchmark", "root", "data_root", "classnames", "split", "args"}
            bad = sorted(set(entry) - allowed)
            if bad:
                raise DataError(f"datasets.{task}.{name}: unknown key(s) {', '.join(bad)}; known: "
                                f"{', '.join(sorted(allowed))}")
            entry["args"] = _as_args(entry.get("args"), f"datasets.{task}.{name}.args")
            specs.append(DatasetSpec(name=str(name), **{k: (str(v) if v is not None and k != "args" else v)
                                                         for k, v in entry.items()}))
        datasets[task] = specs
    args = config.get("args") or {}
    if isinstance(args, (list, str)):
        args = {"all": args}
    if not isinstance(args, dict):
        raise DataError("args must map a task (or 'all') to its flags")
    bad = sorted(set(args) - set(TASKS) - {"all"})
    if bad:
        raise DataError(f"args: unknown task(s) {', '.join(bad)}; use {', '.join(TASKS)} or all")
    common = _as_args(args.get("all"), "args.all")
    for key, flag in (("device", "--device"), ("batch_size", "--batch-size"), ("cache_dir", "--cache-dir"),
                      ("bootstrap", "--bootstrap")):
        if config.get(key) is not None:
            common += [flag, str(config[key])]
    task_args = {t: _as_args(args.get(t), f"args.{t}") for t in TASKS if args.get(t) is not None}
    bootstrap = int(config["bootstrap"]) if config.get("bootstrap") is not None else 1000
    return SweepPlan(models=models, tasks=tasks, datasets={t: datasets.get(t, []) for t in tasks},
                     common_args=common, task_args=task_args,
                     metrics=list(config.get("metrics") or DEFAULT_METRICS), bootstrap=bootstrap,
                     seed=int(config["seed"]) if config.get("seed") is not None else 42,
                     lp_settings=str(config.get("lp_settings") or "primary"))
