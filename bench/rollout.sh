#!/usr/bin/env bash
# The rollout-overhead benchmark in one command, from a clean clone: bench/rollout.sh [--calls 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory install
DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/10 \
    .venv/bin/python bin/ensure_services.py
exec .venv/bin/python bench/rollout.py "$@"
