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
import io
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import PandermError
from ..analysis.compare import compare_runs, input_signature
# The plan and the config reader live in modules of their own; their names stay importable from here.
from .sweep_config import CONFIG_KEYS, load_config, plan_from_config  # noqa: F401
from .sweep_plan import _TRAINED, TASKS, Cell, DatasetSpec, SweepPlan, SweepResult, plan_cells  # noqa: F401

__all__ = ["TASKS", "DatasetSpec", "SweepPlan", "Cell", "SweepResult", "plan_cells", "run_sweep", "load_config",
           "plan_from_config"]


# --------------------------------------------------------------------------- #
# Cells: finished or not, and running one
# --------------------------------------------------------------------------- #
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


def _check_argv(cells: list[Cell], parser) -> None:
    """Parse every cell's command line before running any: a bad flag is one line naming the cell."""
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


def _run_cell(cell: Cell, command) -> tuple[str, str | None]:
    """Run one cell in-process through `command(argv) -> exit status`; ('ran', None) or ('failed', one line).

    Ctrl-C stops the sweep.
    """
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
            rc = command(argv + ["-q"] if is_quiet() else argv)  # each cell sets up logging anew
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


def run_sweep(plan: SweepPlan, out_dir: str | os.PathLike, *, command, parser, compare: bool = True,
              echo=print) -> SweepResult:
    """Run every cell of `plan` under `out_dir` (skipping finished ones), then the leaderboard.

    A cell is a `panderm` command line: `parser` (an argparse parser of `panderm`) checks every cell before
    any runs, `command(argv) -> exit status` runs one (``panderm.cli.main``; passed in so the library does not
    import the command line that imports it).

    `echo` receives the progress lines (default: print). Returns a :class:`SweepResult`; failures are in
    ``errors`` (the caller decides how to end).
    """
    from ..report import write_json

    out_dir = Path(out_dir)
    cells = plan_cells(plan, out_dir)
    _check_argv(cells, parser)
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
        state, why = _run_cell(cell, command)
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
