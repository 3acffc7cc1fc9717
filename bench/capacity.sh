#!/usr/bin/env bash
# Scale-out limits in one command, from a clean clone: bench/capacity.sh [--seconds 15 --rows 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDS_WRK=1 . bench/prepare.sh
exec .venv/bin/python bench/capacity.py "$@"
