#!/usr/bin/env bash
# Set up boom-merge on a fresh Debian 12 machine; safe to run again.
#   1. torch first: on the reference machine `pip install torch==2.13.0` takes a CPU build
#      from local disk (any other torch would pull a multi-GB CUDA build). An existing
#      torch (>=2.4) is kept; TORCH_SPEC overrides the pin.
#   2. boom-merge itself (editable) with its test and data extras.
#   3. the Debian/PyPI text sources the embedded corpora are built from (apt: root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 4))" 2>/dev/null; then
  "$PYTHON" -m pip install -q "$TORCH_SPEC"
fi
"$PYTHON" -m pip install -q -e ".[test,data,ray]"

if [ "$(id -u)" -eq 0 ]; then
  PYTHON="$PYTHON" bash scripts/install-data-sources.sh
else
  sudo --preserve-env=PYTHON,BOOM_MERGE_CACHE,HOME PYTHON="$PYTHON" bash scripts/install-data-sources.sh
fi
