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
        conn = None
        for n in itertools.count():
            due = self._start + (n * threads + index) / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            rid = f"{self.tag}-{next(self._ids)}"
            sent = time.monotonic()
            try:
                conn.request("POST", self.path, body=self.body, headers={**self.headers, "X-Request-ID": rid})
                response = conn.getresponse()
                response.read()
                status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = None
            self.sent.append(Sent(rid, sent, time.monotonic(), status))
        if conn is not None:
            conn.close()

    def answered(self) -> set[str]:
        """The request ids that got a 2xx."""
        return {s.request_id for s in self.sent if s.ok}

    def failed(self) -> list[Sent]:
        return [s for s in self.sent if not s.ok]

    def between(self, start: float, end: float) -> list[Sent]:
        return [s for s in self.sent if start <= s.sent < end]
