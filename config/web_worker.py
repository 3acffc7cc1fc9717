"""gunicorn's uvicorn worker, with keep-alive connections kept evenly spread over the workers.

Why: gunicorn's workers share one listening socket, and the event loop that wakes first accepts every connection
waiting. A burst of new keep-alive connections (a load balancer's upstream pool, a load generator) then lands mostly
on one worker: measured here, 51 of 64 connections on one of two workers, which then served them at the speed of one
core while the other idled. So each worker publishes how many connections it holds, in shared memory the master sets
up before it forks, and a worker holding more than its share answers that many in-flight requests with
`Connection: close`. Clients reconnect (keep-alive clients do so without an error: the response was complete and said
so), a new connection goes to whichever worker accepts it, and since only workers over their share shed, the counts
converge within a few rounds.

The worker also bounds what a client may hold without sending (GuardedHttpToolsProtocol): uvicorn alone keeps a
connection that never sends a request, or sends its headers or body a byte at a time, open for as long as the client
likes (measured: 90 s and counting, with nothing in front of gunicorn in the Kubernetes manifests; with the defaults
below, 5 s, 10 s and 30 s). And a connection cap, gunicorn's `worker_connections`, beyond which requests are answered
503.

And it stops through gunicorn's exit path, so `worker_exit` (platform/gunicorn.conf.py: the prediction log's last
flush) and atexit run. uvicorn, once it has drained, re-raises the signal that stopped it; with gunicorn's default
handlers in place that killed the worker before either ran, and every row buffered since the last flush was lost
(measured: 20 of 20 with a 60 s flush interval). SIGTERM drains (requests in flight are answered); SIGQUIT, which the
master sends for its quick shutdown (SIGINT, SIGQUIT), stops without waiting for them (it used to do nothing, and the
master SIGKILLed the worker after `graceful_timeout`). Either way the flush follows, within `exit_seconds`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

SLOTS = 64  # workers per master, at most
EXIT_SECONDS = 5.0  # of gunicorn's graceful_timeout, kept for the worker's exit (at most a third of it)
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


@dataclass(frozen=True)
class ClientLimits:
    """How long a client may take to send what it must (seconds; the body's rate in bytes per second)."""

    header_seconds: float = 10.0  # from a request's first byte to the end of its headers
    body_seconds: float = 30.0  # for the whole body, or longer for a body arriving at least at...
    body_min_rate: float = 100_000.0  # ...this rate on average (so the 10 MB limit may take 100 s)
    header_bytes: int = 65_536  # a request line and headers larger than this are refused (431)

    @classmethod
    def from_env(cls) -> ClientLimits:
        return cls(
            header_seconds=float(os.environ.get("GUNICORN_HEADER_TIMEOUT", cls.header_seconds)),
            body_seconds=float(os.environ.get("GUNICORN_BODY_TIMEOUT", cls.body_seconds)),
            body_min_rate=float(os.environ.get("GUNICORN_BODY_MIN_RATE", cls.body_min_rate)),
            header_bytes=int(os.environ.get("GUNICORN_MAX_HEADER_BYTES", cls.header_bytes)),
        )


LIMITS = ClientLimits.from_env()
SWEEP_SECONDS = 0.25  # how often a worker looks for connections past their deadline: the deadlines' resolution
REFUSAL = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with one deadline per connection at a time, for what the client owes us:
    - idle (a new connection, or one between requests): its next request within the keep-alive timeout, else closed
      quietly. uvicorn's own keep-alive timer starts only after a first response, and any byte (a CRLF) resets it;
    - the request's headers within `header_seconds` of its first byte, else 408 and closed; and in at most
      `header_bytes` (httptools sets no limit and buffers a header until its end), else 431 and closed;
    - its body within `body_seconds`, or at `body_min_rate` on average, else 408 (or only closed, when the
      application has started answering) and closed. The application then sees a disconnect: a Django thread
      reading the body is let go, the front drops the request. Time the worker itself is not reading (the
      application has not asked for more body, or not yet sent 100 Continue) does not count against the client.
    While the application answers, the client owes nothing: no deadline runs.

    A deadline is a time stamp, checked by one sweep of the worker's connections every SWEEP_SECONDS, not a timer:
    uvloop's call_later and cancel cost 5 us (measured here), three times per request (bench/web_protocol.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = 0.0  # loop time
        self._phase = ""
        self._body_started = 0.0
        self._body_received = 0
        self._header_received = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("idle", self.timeout_keep_alive)
        if getattr(self.server_state, "deadline_sweep", None) is None:  # the first connection of this server
            self.server_state.deadline_sweep = self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.server_state)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase == "header" and not self.transport.is_closing():  # still in the headers after all of it
            self._header_received += len(data)
            if self._header_received > LIMITS.header_bytes:
                self._disarm()
                self._refuse("header_too_large", 431, f"request headers over {LIMITS.header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_received = 0
        self._arm("header", LIMITS.header_seconds)

    def on_headers_complete(self) -> None:
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            _count_refusal("connection_limit")  # uvicorn answers it 503 (the same test, in super())
        super().on_headers_complete()
        self._restart_body()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_received += len(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        if self.cycle.response_complete:  # answered before its body was all in (a 413, a 401)
            self._arm("idle", self.timeout_keep_alive)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._phase == "" and self.cycle.response_complete:
            self._arm("idle", self.timeout_keep_alive)

    def _arm(self, phase: str, seconds: float) -> None:
        self._phase, self._deadline = phase, self.loop.time() + seconds

    def _disarm(self) -> None:
        self._phase = ""

    def check_deadline(self, now: float) -> None:
        if self._phase and now >= self._deadline:
            self._on_deadline(now)

    def _restart_body(self) -> None:
        self._body_started, self._body_received = self.loop.time(), 0
        self._arm("body", LIMITS.body_seconds)

    def _on_deadline(self, now: float) -> None:
        phase, self._phase = self._phase, ""
        if self.transport.is_closing():
            return
        if phase == "idle":
            self.transport.close()
        elif phase == "header":
            self._refuse("header_timeout", 408, "request headers not received in time")
        elif self.flow.read_paused or self.cycle.waiting_for_100_continue:
            self._restart_body()  # we are not reading: not the client's delay
        else:
            allowed = max(LIMITS.body_seconds, self._body_received / LIMITS.body_min_rate)
            left = self._body_started + allowed - now
            if left > 0:
                self._arm("body", left)
            else:
                self._refuse("body_timeout", 408, "request body not received in time")

    def _refuse(self, reason: str, status: int, detail: str) -> None:
        _count_refusal(reason)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # a response under way cannot be replaced by this one
                return
            cycle.disconnected = True  # the application's reads now end and what it sends is dropped
            cycle.message_event.set()
        body = b'{"detail": "%s"}' % detail.encode()
        phrase = http.HTTPStatus(status).phrase.encode()
        self.transport.write(REFUSAL % (status, phrase, len(body)) + body)
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, state: Any) -> None:
    """Act on every connection past its deadline, then come back in SWEEP_SECONDS (for as long as the loop runs)."""
    now = loop.time()
    for protocol in list(state.connections):
        check = getattr(protocol, "check_deadline", None)  # not a WebSocket connection's
        if check is not None:
            try:
                check(now)
            except Exception:  # noqa: BLE001 - one connection's trouble must not stop the sweeps
                logging.getLogger("uvicorn.error").exception("checking a connection's deadline failed")
    state.deadline_sweep = loop.call_later(SWEEP_SECONDS, _sweep, loop, state)


def _count_refusal(reason: str) -> None:
    from serving.metrics import CLIENT_REFUSALS  # the application's metrics, loaded by then

    CLIENT_REFUSALS.labels(reason).inc()


class BalancedUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": GuardedHttpToolsProtocol, "access_log": False}  # AccessLog logs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn answers a request 503 when the connections, its own included, reach limit_concurrency (or the
        # requests in flight do): one more than the cap, so that `worker_connections` connections are served.
        self.config.limit_concurrency = self.cfg.worker_connections + 1
        # The master SIGKILLs a worker still there `graceful_timeout` after its signal: requests in flight get that
        # less the exit's share (worker_exit bounds itself by `exit_seconds`), so the flush always has its turn.
        self.exit_seconds = min(EXIT_SECONDS, self.cfg.graceful_timeout / 3)
        self.config.timeout_graceful_shutdown = max(self.cfg.graceful_timeout - self.exit_seconds - 1, 1)
        self._server: Server | None = None

    def init_signals(self) -> None:
        super().init_signals()  # gunicorn's signals at SIG_DFL: SIGCHLD's keeps subprocesses' exit codes (uvicorn#894)
        # Python handlers, not SIG_DFL, for the signals that stop the worker: uvicorn's re-raise of the signal it
        # drained on (Server.capture_signals restores these first) then returns, and the worker leaves through
        # gunicorn's sys.exit(0), worker_exit and atexit, instead of dying at the re-raise.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._stop)

    def _stop(self, sig: int, frame: Any) -> None:
        server = self._server
        if server is None:
            raise SystemExit(0)  # still booting (loading the models): stop now, by way of worker_exit
        # Serving, uvicorn's own handlers take SIGTERM (drain) and SIGINT; this one SIGQUIT, gunicorn's quick stop:
        # no waiting for requests in flight. Once uvicorn has stopped, this also gets its re-raise: nothing to do.
        server.should_exit = True
        if sig == signal.SIGQUIT:
            server.force_exit = True

    async def _serve(self) -> None:
        self.config.app = AccessLog(self.wsgi, self.log)
        server = self._server = Server(config=self.config)  # SIGQUIT: self._stop (not uvicorn_worker's, a no-op)
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
