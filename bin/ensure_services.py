"""Make sure the Postgres and Redis that `make test` uses answer, starting local ones that are installed but stopped.

Exits non-zero with one readable line naming what is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from urllib.parse import urlparse

import psycopg2
import redis

LOCAL = {"127.0.0.1", "localhost", "::1"}


def postgres_answers(url: str) -> bool:
    parts = urlparse(url)
    try:
        psycopg2.connect(
            host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
            password=parts.password or None, dbname="postgres", connect_timeout=3,
        ).close()  # fmt: skip
    except psycopg2.OperationalError:
        return False
    return True


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_postgres() -> str | None:
    if not shutil.which("pg_ctlcluster"):
        return "PostgreSQL is not installed (no pg_ctlcluster): apt-get install postgresql, or set TEST_DATABASE_URL"
    for version_dir in sorted(glob.glob("/etc/postgresql/*")):
        version = os.path.basename(version_dir)
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
            capture_output=True,
        )
    return None


def start_redis(url: str) -> str | None:
    if not shutil.which("redis-server"):
        return "Redis is not installed (no redis-server): apt-get install redis-server, or set TEST_REDIS_URL"
    port = str(urlparse(url).port or 6379)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            port,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
        capture_output=True,
    )
    return None


def ensure(name: str, url: str, answers, start) -> str | None:
    if answers(url):
        return None
    if urlparse(url).hostname not in LOCAL:
        return f"{name} at {urlparse(url).hostname} does not answer"
    problem = start()
    if problem:
        return problem
    for _ in range(30):
        if answers(url):
            print(f"started {name}")
            return None
        time.sleep(0.5)
    return f"{name} is installed but did not start on {urlparse(url).hostname}:{urlparse(url).port}"


def main() -> int:
    database_url, redis_url = os.environ["DATABASE_URL"], os.environ["REDIS_URL"]
    problems = [
        ensure("PostgreSQL", database_url, postgres_answers, start_postgres),
        ensure("Redis", redis_url, redis_answers, lambda: start_redis(redis_url)),
    ]
    problems = [p for p in problems if p]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
