#!/usr/bin/env bash
# The rollout-overhead benchmark in one command, from a clean clone: bench/rollout.sh [--calls 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_REDIS_DB=10 . bench/prepare.sh
exec .venv/bin/python bench/rollout.py "$@"
