#!/usr/bin/env bash
# Quick start: create/use .venv, install panderm, run every task on the bundled sample.
#   bash script/demo.sh                      # tiny random-weight demo model (says so)
#   bash script/demo.sh --model DermLIP-B16  # a real model, where the hub is reachable
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh"
cd "$ROOT"
python -m panderm demo "$@"
