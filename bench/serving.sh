#!/usr/bin/env bash
# The serving benchmark in one command, from a clean clone: bench/serving.sh [--duration 15 --warmup 3 ...]
# Installs what it needs (the project venv via `make install`, wrk from Debian, MLflow into bench/.mlflow-venv),
# makes sure the local Postgres and Redis answer, then runs bench/serving.py (see its docstring and --help).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: wrk is not installed (as root: apt-get install -y wrk)" >&2
        exit 1
    fi
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
make --no-print-directory install
DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/14 \
    .venv/bin/python bin/ensure_services.py
exec .venv/bin/python bench/serving.py "$@"
