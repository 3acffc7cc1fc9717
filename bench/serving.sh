#!/usr/bin/env bash
# The serving benchmark in one command, from a clean clone: bench/serving.sh [--duration 15 --warmup 3 ...]
# Installs what it needs (the project venv via `make install`, wrk from Debian, MLflow into bench/.mlflow-venv),
# makes sure the local Postgres and Redis answer, then runs bench/serving.py (see its docstring and --help).
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDS_WRK=1 . bench/prepare.sh
exec .venv/bin/python bench/serving.py "$@"
