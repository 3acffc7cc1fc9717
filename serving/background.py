"""A buffer written to the database by its own background thread: the prediction log and experiment exposures.

Subclasses keep their rows however suits them and implement `flush()` (write what is buffered, keep what failed,
answer how many rows were written). This class owns the thread: started on first use, woken every
`flush_seconds` (or at once by `wake()`), holding its own database connection, and stopped by `close()`, which
flushes what is left (a clean shutdown loses nothing).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from django.db import close_old_connections, connection


class BackgroundFlusher(ABC):
    thread_name = "background-flush"

    def __init__(self, *, flush_seconds: float) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()  # guards the subclass's rows and the thread handle
        self._flush_lock = threading.Lock()  # one flush at a time, from the thread or from close()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @abstractmethod
    def flush(self) -> int:
        """Write what is buffered; keep what failed for the next try; answer how many rows were written."""

    def wake(self) -> None:
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            # This thread owns its own database connection: drop it when it broke or aged out, as requests do.
            close_old_connections()
            if not self.flush():
                connection.close_if_unusable_or_obsolete()
        connection.close()

    def close(self) -> None:
        """Stop the thread and write what is left (clean shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.flush()
