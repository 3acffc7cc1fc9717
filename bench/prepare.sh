# Sourced by the bench/*.sh wrappers (from the repository root): wrk from Debian when NEEDS_WRK=1, the project venv
# via `make install`, and the local Postgres and Redis answering (bin/ensure_services.py starts them if stopped).
if [ "${NEEDS_WRK:-0}" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: wrk is not installed (as root: apt-get install -y wrk)" >&2
        exit 1
    fi
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
make --no-print-directory install
DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/${BENCH_REDIS_DB:-14} \
    .venv/bin/python bin/ensure_services.py
