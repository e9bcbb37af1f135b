#!/usr/bin/env bash
# Create/use .venv, install panderm with its test extras, run the test suite.
# Extra arguments go to pytest, e.g. `bash script/test.sh -k zeroshot`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh" test
cd "$ROOT"
# the 25 slowest tests are listed after every run, so a slow one is seen when it lands.
# Workers (pytest-xdist): one per core, each on one thread (tests/conftest.py); `-n 0` runs in one process.
python -m pytest -n "${PANDERM_TEST_WORKERS:-auto}" --durations=25 "$@"
