"""A bounded load generator for the fault suite: a fixed number of client threads, a fixed total rate, a timeout on
every request, and a record of every request it sent (its own request id, when, and the answer's status).

Each request carries a request id the client chose (`X-Request-ID`, which the platform keeps when well-formed), so
the suite knows the id of every request, answered or not, and can look each 2xx up in the prediction log.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from dataclasses import dataclass


@dataclass
class Sent:
    request_id: str
    sent: float  # monotonic
    done: float
    status: int  # 0: no answer (connection refused or reset, or the client's timeout)
    retried: bool = False  # sent again once on a new connection (see Load._send)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Load:
    """`threads` keep-alive clients sending `body` to `path` at `rate` requests/s in total (each thread its share,
    paced from a common start so a slow answer is not made up for by a burst). At most `threads` requests are in
    flight: a hung server slows the load down instead of growing it."""

    def __init__(self, port: int, path: str, body: bytes, headers: dict[str, str], *, tag: str, rate: float = 200,
                 threads: int = 8, timeout: float = 5) -> None:  # fmt: skip
        self.port, self.path, self.body, self.headers = port, path, body, headers
        self.tag, self.rate, self.timeout = tag, rate, timeout
        self.sent: list[Sent] = []
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i, threads), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _run(self, index: int, threads: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for n in itertools.count():
            due = self._start + (n * threads + index) / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            rid = f"{self.tag}-{next(self._ids)}"
            sent = time.monotonic()
            reused = conn is not None
            conn, status = self._send(conn, rid)
            retried = False
            if status == 0 and reused:
                # What HTTP clients do for an idempotent request on a kept-alive connection the server closed as it
                # was sent (a worker shutting down closes its idle connections): send it once more on a new one,
                # with the same request id (the log keeps one row for it). Counted: cases that must see no
                # closed connections assert that none was retried.
                conn, status = self._send(None, rid)
                retried = True
            self.sent.append(Sent(rid, sent, time.monotonic(), status, retried))
        if conn is not None:
            conn.close()

    def _send(self, conn: http.client.HTTPConnection | None, rid: str) -> tuple[http.client.HTTPConnection | None, int]:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body=self.body, headers={**self.headers, "X-Request-ID": rid})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            return None, 0
        if response.will_close:
            conn.close()
            return None, response.status
        return conn, response.status

    def answered(self) -> set[str]:
        """The request ids that got a 2xx."""
        return {s.request_id for s in self.sent if s.ok}

    def failed(self) -> list[Sent]:
        return [s for s in self.sent if not s.ok]

    def retried(self) -> list[Sent]:
        return [s for s in self.sent if s.retried]

    def between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.sent < end]
