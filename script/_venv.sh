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
  # torch/torchvision first, pinned to releases pip can take from a local wheel cache
  # when one exists; any torch >= 2.1 works.
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" >&2 \
    || "$VENV/bin/python" -m pip install -q "torch>=2.1" "torchvision>=0.16" >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
