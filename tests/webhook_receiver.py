"""A real HTTP server on 127.0.0.1 standing in for a webhook receiver: it keeps every request's headers and raw
body, answers `failures` 500s before any 200, or redirects every request to `redirect_to`."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class HookReceiver:
    def __init__(self, *, failures: int = 0, redirect_to: str | None = None) -> None:
        self.received: list[Received] = []
        self.failures = failures
        self.redirect_to = redirect_to
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                receiver.received.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
                if receiver.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", receiver.redirect_to)
                elif receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _answer  # noqa: N815 (the http.server API)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
