"""Run a door's or the CLI's `main(argv)` in the test process, as `subprocess.run` would report it.

Each door keeps one subprocess smoke test (tests/test_bad_input_matrix.py, tests/test_cli_features.py); the
rest call `main` here: no interpreter start-up, no second import of torch. stdout and stderr are what the door
printed (a log record goes to pytest's log capture instead); a `SystemExit` (argparse) becomes its exit code.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def run(main, argv, cwd: Path = REPO) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)  # the doors read relative paths from the working directory, as in a shell at the repo root
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(before)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
