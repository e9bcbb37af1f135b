#!/usr/bin/env bash
# Quick start: create/use .venv, install panderm, run every task on the bundled sample.
#   bash script/demo.sh                      # tiny random-weight demo model (says so)
#   bash script/demo.sh --model DermLIP-B16  # a real model, where the hub is reachable
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh" ""  # no extras (without an argument it would see the caller's first flag)
cd "$ROOT"
python -m panderm demo "$@"
