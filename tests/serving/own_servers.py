"""A test's own Redis and Postgres on spare ports, to hang (SIGSTOP) or stop without touching the shared servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    port: int
    pid: int

    def hang(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def own_redis() -> Iterator[Server]:
    port = spare_port()
    process = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield Server(port, process.pid)
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(timeout=10)


@contextmanager
def own_postgres() -> Iterator[Server]:
    """A throwaway cluster run by the postgres user (Postgres refuses to run as root)."""
    port = spare_port()
    home = Path(tempfile.mkdtemp(prefix="modelworks-pg-"))
    shutil.chown(home, "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    data = home / "data"
    subprocess.run([*as_postgres, "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_postgres, "pg_ctl", "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield Server(port, pid)
    finally:
        os.kill(pid, signal.SIGCONT)
        subprocess.run([*as_postgres, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
