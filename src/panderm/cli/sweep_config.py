"""Sweep config files (JSON or YAML) and the :class:`~panderm.cli.sweep_plan.SweepPlan` they describe
(keys in docs/ANALYSIS.md).
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from ..errors import DataError
from ..analysis.compare import DEFAULT_METRICS
from .sweep_plan import _TRAINED, TASKS, DatasetSpec, SweepPlan


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
