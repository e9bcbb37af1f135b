#!/usr/bin/env bash
# Create/use .venv (as script/test.sh does) and run the GPU check; arguments go to gpu_check.py.
#   bash benchmarks/gpu_check.sh                       # --device cuda
#   bash benchmarks/gpu_check.sh --device cuda:1 --out gpu-check-output
#   bash benchmarks/gpu_check.sh --device cpu --quick  # every code path, on CPU
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/script/_venv.sh" ""  # an explicit (empty) extras argument: otherwise ours would be read as one
case " $* " in
  *" --device "*|*" --device="*) ;;
  *) set -- --device cuda "$@" ;;
esac
python "$ROOT/benchmarks/gpu_check.py" "$@"
