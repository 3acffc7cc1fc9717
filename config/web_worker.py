"""gunicorn's uvicorn worker, with keep-alive connections kept evenly spread over the workers.

Why: gunicorn's workers share one listening socket, and the event loop that wakes first accepts every connection
waiting. A burst of new keep-alive connections (a load balancer's upstream pool, a load generator) then lands mostly
on one worker: measured here, 51 of 64 connections on one of two workers, which then served them at the speed of one
core while the other idled. So each worker publishes how many connections it holds, in shared memory the master sets
up before it forks, and a worker holding more than its share answers that many in-flight requests with
`Connection: close`. Clients reconnect (keep-alive clients do so without an error: the response was complete and said
so), a new connection goes to whichever worker accepts it, and since only workers over their share shed, the counts
converge within a few rounds.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

SLOTS = 64  # workers per master, at most
STALE_SECONDS = 2.0  # a slot not refreshed for this long belongs to a worker that is gone
BALANCE_SECONDS = 0.25
# One (pid, connections, refreshed-at) triple per worker; made here, in the master, so every forked worker shares it.
_slots = multiprocessing.RawArray("d", SLOTS * 3)
_claiming = multiprocessing.Lock()


def connection_counts(now: float) -> dict[int, int]:
    """Connections held by each live worker, by pid."""
    counts = {}
    for slot in range(SLOTS):
        pid, held, refreshed = _slots[slot * 3 : slot * 3 + 3]
        if pid and now - refreshed < STALE_SECONDS:
            counts[int(pid)] = int(held)
    return counts


def excess(mine: int, counts: dict[int, int]) -> int:
    """How many connections a worker holding `mine` should shed: what it holds above its fair share, rounded up,
    plus one connection of slack so that a balanced pair never sheds back and forth."""
    fair = math.ceil(sum(counts.values()) / max(len(counts), 1))
    return max(0, mine - fair - 1)


class AccessLog:
    """gunicorn's access log, in its `access_log_format` (which may name request headers, such as the request id
    nginx passes), for ASGI requests: uvicorn's own access log has a fixed format."""

    def __init__(self, app: Any, log: Any) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.log.access_log_enabled:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = SimpleNamespace(status=500, headers=[], sent=0)

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]]
            elif message["type"] == "http.response.body":
                response.sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.log.access(response, _request_headers(scope), _environ(scope),
                            timedelta(seconds=time.perf_counter() - started))  # fmt: skip


def _request_headers(scope: dict) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in scope["headers"]]


def _environ(scope: dict) -> dict[str, str]:
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    return {
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": f"{path}?{query}" if query else path,
        "PATH_INFO": scope["path"],
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": (scope.get("client") or ("-",))[0],
    }


class BalancedUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "access_log": False}  # AccessLog writes it instead

    async def _serve(self) -> None:
        self.config.app = AccessLog(self.wsgi, self.log)
        server = Server(config=self.config)
        self._install_sigquit_handler()
        self._slot = self._claim_slot()
        balancer = asyncio.get_running_loop().create_task(self._balance(server))
        try:
            await server.serve(sockets=self.sockets)
        finally:
            balancer.cancel()
            self._publish(0, refreshed=0.0)
        if not server.started:
            raise SystemExit(Arbiter.WORKER_BOOT_ERROR)  # as the parent class does

    def _claim_slot(self) -> int | None:
        now = time.monotonic()
        with _claiming:
            for slot in range(SLOTS):
                pid, _, refreshed = _slots[slot * 3 : slot * 3 + 3]
                if not pid or pid == os.getpid() or now - refreshed >= STALE_SECONDS:
                    _slots[slot * 3 : slot * 3 + 3] = [float(os.getpid()), 0.0, now]
                    return slot
        return None  # more workers than slots: this one only never sheds

    def _publish(self, held: int, *, refreshed: float) -> None:
        if self._slot is not None:
            base = self._slot * 3
            _slots[base : base + 3] = [float(os.getpid()), float(held), refreshed]

    async def _balance(self, server: Server) -> None:
        while True:
            await asyncio.sleep(BALANCE_SECONDS)
            connections = server.server_state.connections
            now = time.monotonic()
            self._publish(len(connections), refreshed=now)
            shed = excess(len(connections), connection_counts(now))
            for protocol in list(connections):
                if shed <= 0:
                    break
                cycle = getattr(protocol, "cycle", None)
                # Only before the response has started: its headers must say "Connection: close", or the client
                # would send its next request into a connection about to close.
                if cycle is not None and not cycle.response_started and cycle.keep_alive:
                    cycle.keep_alive = False  # uvicorn then answers with "Connection: close" and closes
                    shed -= 1
