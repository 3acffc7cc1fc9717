"""A circuit breaker per model version, in each web process (like Hystrix or resilience4j, not shared state).

Closed: calls go through. It opens after N consecutive failures, or when the error share over a sliding window
reaches a threshold (with a minimum number of calls). Open: calls are refused until the cooldown passes, then one
probe is let through (half-open); its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class BreakerPolicy:
    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_seconds: float = 30.0
    min_requests: int = 20
    cooldown_seconds: float = 10.0


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy, clock=time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._window_failures = 0  # kept alongside the window so a record() never walks it
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.policy.cooldown_seconds:
            self._state = HALF_OPEN
            self._probe_in_flight = False
        return self._state

    def retry_after(self) -> int:
        with self._lock:
            left = self.policy.cooldown_seconds - (self._clock() - self._opened_at)
        return max(1, int(left + 0.999))

    def allow(self) -> bool:
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def release(self) -> None:
        """A call that was let through ended in the caller's fault (bad input): neither a success nor a failure,
        but a half-open breaker may let its next probe through."""
        with self._lock:
            if self._state == HALF_OPEN:
                self._probe_in_flight = False

    def record(self, ok: bool) -> None:
        with self._lock:
            now = self._clock()
            if self._state == HALF_OPEN:
                self._probe_in_flight = False
                if ok:
                    self._close()
                else:
                    self._open(now)
                return
            self._outcomes.append((now, ok))
            self._window_failures += not ok
            while self._outcomes and now - self._outcomes[0][0] > self.policy.window_seconds:
                self._window_failures -= not self._outcomes.popleft()[1]
            self._consecutive = 0 if ok else self._consecutive + 1
            if self._state == CLOSED and (
                self._consecutive >= self.policy.consecutive_failures or self._rate_tripped()
            ):
                self._open(now)

    def _rate_tripped(self) -> bool:
        total = len(self._outcomes)
        if total < self.policy.min_requests:
            return False
        return self._window_failures / total >= self.policy.error_rate

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._opened_at = now

    def _close(self) -> None:
        self._state = CLOSED
        self._consecutive = 0
        self._outcomes.clear()
        self._window_failures = 0
