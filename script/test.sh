#!/usr/bin/env bash
# Create/use .venv, install panderm with its test extras, run the test suite.
# Extra arguments go to pytest, e.g. `bash script/test.sh -k zeroshot`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh" test
cd "$ROOT"
python -m pytest "$@"
