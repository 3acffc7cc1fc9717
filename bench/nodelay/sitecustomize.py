"""Bench-only: set TCP_NODELAY on every accepted TCP socket in this interpreter and the processes it spawns.

Put this folder on PYTHONPATH of `mlflow models serve` to get MLflow's scoring server with the ~40 ms keep-alive
stall removed. Uvicorn's multi-worker mode hands asyncio a listening socket whose `proto` is 0, so asyncio's
`_set_nodelay` (which checks `proto == IPPROTO_TCP`) skips the accepted connections and Nagle's algorithm delays
each response's last segment until the client's delayed ACK (upstream uvicorn issue 3149). Asyncio accepts with
`socket.socket.accept`, so patching that one method is enough.
"""

from __future__ import annotations

import contextlib
import socket

_original_accept = socket.socket.accept


def _accept_nodelay(self: socket.socket) -> tuple[socket.socket, object]:
    conn, address = _original_accept(self)
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn, address


socket.socket.accept = _accept_nodelay  # type: ignore[method-assign]
