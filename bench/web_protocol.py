"""What the web worker's client deadlines (config/web_worker.py, GuardedHttpToolsProtocol) add to each request.

One event loop (uvloop), a fake transport and a trivial ASGI app: each protocol parses and answers the same small
prediction request N times on one keep-alive connection; the best of 8 rounds is printed, in microseconds per
request. This is uvicorn's share of a request only (no model, no Django): compare the difference with the ~290 us of
CPU a prediction costs at 6,900 req/s on two cores (bench/serving.py).

    PYTHONPATH=. .venv/bin/python bench/web_protocol.py
"""

from __future__ import annotations

import asyncio
import time

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from config.web_worker import GuardedHttpToolsProtocol

REQUEST = (
    b"POST /api/v1/models/cancer/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: k\r\n"
    b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n" + b'{"instances": [[1]]}'
)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request(protocol_class: type, n: int) -> float:
    config = Config(app=app, http=protocol_class, loop="none", log_config=None, timeout_keep_alive=5)
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    protocol.connection_made(Transport())
    started = time.perf_counter()
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs and answers
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    assert state.total_requests == n, state.total_requests
    return elapsed / n * 1e6


async def main(n: int = 30_000, rounds: int = 8) -> None:
    plain, guarded = [], []
    for _ in range(rounds):
        plain.append(await per_request(HttpToolsProtocol, n))
        guarded.append(await per_request(GuardedHttpToolsProtocol, n))
    print(f"best of {rounds}: uvicorn's httptools protocol {min(plain):.1f} us/request, "
          f"with the client deadlines {min(guarded):.1f} us/request")  # fmt: skip


if __name__ == "__main__":
    uvloop.run(main())
