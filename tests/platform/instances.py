"""A test's own Redis and PostgreSQL servers, to hang (SIGSTOP), stop and restart without touching the shared ones.

Fault tests must never signal the suite's Redis (6379) or Postgres (5432): those belong to every test session on the
machine. Each server here runs on a spare port in a temporary directory; a hang stops the server and each of its
children (Postgres forks a backend per connection, each in a session of its own: SIGSTOP of the postmaster alone
would leave open connections answering), and every server is killed on exit, stopped or not.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from django.db import connection

from tests.platform.envnames import ROOT
from tests.platform.processes import free_port, request, stop, wait_for

# The newest installed PostgreSQL's server binaries (initdb, postgres, pg_dump), or where they would be.
_PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
PG_BIN = Path(_PG_BINS[-1] if _PG_BINS else "/usr/lib/postgresql/none/bin")
START_SECONDS = 20


def require_tools() -> None:
    """Fail (never skip) with what to do when the servers these tests start are not installed."""
    found = {"redis-server": shutil.which("redis-server"), "PostgreSQL's initdb": (PG_BIN / "initdb").exists()}
    missing = [name for name, there in found.items() if not there]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run bin/ensure_tools.sh", pytrace=False)


class _Server:
    process: subprocess.Popen | None = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets (the kernel still accepts connections) but answers nothing.
        Its children too, each of them (Postgres puts every backend in a session of its own)."""
        os.kill(self.process.pid, signal.SIGSTOP)  # first, so that it forks no one new meanwhile
        for pid in _children(self.process.pid):
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT to the server and its children; nothing to do for a server that is down."""
        if self.process is None or self.process.poll() is not None:
            return
        for pid in _children(self.process.pid):
            os.kill(pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGCONT)

    def hang_for(self, seconds: float) -> None:
        """Hung for `seconds`, then answering again (resumed whatever happens)."""
        self.pause()
        try:
            time.sleep(seconds)
        finally:
            self.resume()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for pid in [*_children(self.process.pid), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(Path(stat).parent.name))
    return found


class RedisServer(_Server):
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return client.ping()
            except redis.RedisError:
                return False

        wait_for(answers, START_SECONDS, f"redis on port {self.port}")

    def stop(self) -> None:
        """Down: connections are refused until start() again."""
        self.kill()


class PostgresServer(_Server):
    """A throwaway cluster (trust auth, no fsync). As root, the server runs as the `postgres` user (initdb refuses
    root)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.data = workdir / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(workdir, self._user)
        subprocess.run(
            [PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=60, user=self._user,
        )  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [PG_BIN / "postgres", "-D", self.data, "-p", str(self.port), "-k", self.workdir,
                   "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"]  # fmt: skip
        log = (self.workdir / "postgres.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        user=self._user)  # fmt: skip
        log.close()
        wait_for(lambda: self.psql("postgres", "SELECT 1").returncode == 0, START_SECONDS, f"postgres on {self.port}")

    def stop(self) -> None:
        """Down: a fast shutdown (sessions ended, then connections refused) until start() again."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def psql(self, database: str, sql: str) -> subprocess.CompletedProcess:
        return subprocess.run([PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                               database, "-Atc", sql], capture_output=True, text=True, timeout=10)  # fmt: skip

    def copy_of_test_database(self, name: str) -> str:
        """A copy of the pytest database, schema and committed rows, in this server; returns its URL."""
        self.psql("postgres", f'CREATE DATABASE "{name}"').check_returncode()
        db = connection.settings_dict
        dump = subprocess.run(
            [PG_BIN / "pg_dump", "-h", db["HOST"], "-p", str(db["PORT"] or 5432), "-U", db["USER"], "-d", db["NAME"],
             "--no-owner", "--no-privileges"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            [PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", name, "-q",
             "-v", "ON_ERROR_STOP=1"],
            input=dump.stdout, capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        return self.url(name)


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    require_tools()
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def own_postgres() -> Iterator[PostgresServer]:
    require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="mw-pg-"))
    server = None
    try:
        server = PostgresServer(workdir)
        server.start()
        yield server
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def start_web(port: int, var: Path, artifact_root: Path, logs: list, *, database_url: str, redis_url: str,
              env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
    """gunicorn as deployed (platform/gunicorn.conf.py, the ASGI front), one worker, on the given servers."""
    var.mkdir()
    environment = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ARTIFACT_ROOT": str(artifact_root),
        "MODELWORKS_VAR_DIR": str(var),
        "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
        **(env or {}),
    }
    log = (var / "gunicorn.log").open("w")
    logs.append(log)
    command = [sys.executable, "-m", "gunicorn", "config.asgi:application", "-c", "platform/gunicorn.conf.py"]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


@contextlib.contextmanager
def running_web(**kwargs) -> Iterator[int]:
    """start_web on a free port, waited for, always stopped (master and workers) on exit; yields the port."""
    port = free_port()
    logs: list = []
    web = start_web(port, logs=logs, **kwargs)
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        yield port
    finally:
        stop(web, True)
        for log in logs:
            log.close()


@dataclass
class Answer:
    sent: float  # monotonic
    done: float
    status: int  # 0: no answer (connection error or client timeout)
    headers: dict[str, str] = field(default_factory=dict)


class SteadyLoad:
    """One client thread sending the same request at a steady rate over a keep-alive connection, recording every
    answer (a client timeout of `timeout` seconds bounds each request)."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str], *, rate: float = 40,
                 timeout: float = 10) -> None:  # fmt: skip
        self.port, self.path, self.body, self.headers = port, path, body, headers
        self.interval, self.timeout = 1 / rate, timeout
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        conn = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            sent = time.monotonic()
            try:
                conn.request("POST", self.path, body=self.body, headers=self.headers)
                response = conn.getresponse()
                response.read()
                self.answers.append(Answer(sent, time.monotonic(), response.status, dict(response.getheaders())))
            except OSError:
                self.answers.append(Answer(sent, time.monotonic(), 0))
                conn.close()
                conn = None
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to the requests sent in [start, end)."""
        return [a for a in self.answers if start <= a.sent < end]
