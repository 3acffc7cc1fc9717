#!/usr/bin/env bash
# Scale-out limits in one command, from a clean clone: bench/capacity.sh [--seconds 15 --rows 100000]
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
exec .venv/bin/python bench/capacity.py "$@"
