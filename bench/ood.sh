#!/usr/bin/env bash
# OOD scoring on vs off, in one run: bench/ood.sh [--duration 8 --rounds 3 --connections 8,64 --redis-db 14]
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDS_WRK=1 . bench/prepare.sh
exec .venv/bin/python bench/ood.py "$@"
