#!/usr/bin/env bash
# Create/use .venv, install panderm with its test extras, run the test suite.
# Extra arguments go to pytest, e.g. `bash script/test.sh -k zeroshot`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh" test
cd "$ROOT"
# the 25 slowest tests are listed after every run, so a slow one is seen when it lands.
# Workers (pytest-xdist): one per usable core, at most 4 (each holds its own torch and tiny models), each on
# one thread (tests/conftest.py); PANDERM_TEST_WORKERS=N sets the number, `-n 0` runs in one process.
WORKERS="${PANDERM_TEST_WORKERS:-$(python -c 'import os; n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(); print(max(1, min(n or 1, 4)))')}"
python -m pytest -n "$WORKERS" --durations=25 "$@"
