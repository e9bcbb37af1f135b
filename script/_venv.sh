# Sourced by script/*.sh: create or reuse .venv and install the project into it.
# Installs are scripted so a fresh clone needs nothing by hand.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PANDERM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.panderm-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "installing panderm${EXTRAS:+[$EXTRAS]} into $VENV (first run takes a few minutes)" >&2
  # torch's x86_64 wheel is a CUDA build (~6 GB installed); say so before pip fails half-way.
  free_kb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print $4}')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt 7000000 ]; then
    echo "warning: only $((free_kb / 1024)) MiB free under $(dirname "$VENV"); torch needs about 6 GB" >&2
  fi
  # torch/torchvision first, pinned to releases pip can take from a local wheel cache
  # when one exists; any torch >= 2.1 works.
  "$VENV/bin/python" -m pip install -q --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" >&2 \
    || "$VENV/bin/python" -m pip install -q --no-cache-dir "torch>=2.1" "torchvision>=0.16" >&2
  "$VENV/bin/python" -m pip install -q --no-cache-dir -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
