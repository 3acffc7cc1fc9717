"""Adaptive micro-batching: concurrent requests for one model version share one model call.

A tree ensemble scores 64 rows in about the time it scores one, so under load grouping requests multiplies
throughput. Each version gets one batching thread per process. It takes the first waiting request, then everything
already queued; if more requests for the version are on their way (announced but not yet queued) it waits for them
up to the wait budget. A lone request is never held back, so light traffic pays no extra latency.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

PredictFn = Callable[[list[list[Any]]], tuple[list[Any], list[list[float]] | None]]


@dataclass
class _Job:
    rows: list[list[Any]]
    future: Future = field(default_factory=Future)


def split_answers(
    predictions: list[Any], probabilities: list[list[float]] | None, sizes: list[int]
) -> Iterator[tuple[list[Any], list[list[float]] | None]]:
    """One batched call's answers cut back into each request's own, in order (`sizes`: rows per request)."""
    start = 0
    for size in sizes:
        end = start + size
        yield predictions[start:end], None if probabilities is None else probabilities[start:end]
        start = end


class MicroBatcher:
    def __init__(self, predict: PredictFn, *, max_rows: int, wait_seconds: float, name: str = "") -> None:
        self._predict = predict
        self._max_rows = max_rows
        self._wait = wait_seconds
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._announced = 0
        self._lock = threading.Lock()
        self.on_batch: Callable[[int], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def announce(self) -> None:
        """A request for this version has started; the batcher may wait a moment for it."""
        with self._lock:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced request will not submit after all (bad input, cache hit, error)."""
        with self._lock:
            self._announced -= 1

    def submit(self, rows: list[list[Any]], *, announced: bool = False) -> Future:
        """Queue the rows of one request; the future gets (predictions, probabilities) for exactly those rows."""
        job = _Job(rows)
        if announced:
            self.withdraw()
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the thread once the work queued so far is done (the model was evicted)."""
        self._queue.put(None)

    def _gather(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        rows = len(jobs[0].rows)
        deadline = time.monotonic() + self._wait
        while rows < self._max_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                with self._lock:
                    coming = self._announced > 0
                remaining = deadline - time.monotonic()
                if not coming or remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            jobs.append(job)
            rows += len(job.rows)
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._gather()
            if jobs is None:
                return
            rows = [row for job in jobs for row in job.rows]
            try:
                predictions, probabilities = self._predict(rows)
            except BaseException as exc:  # the thread lives on
                if len(jobs) == 1:
                    _fail(jobs[0], exc)
                else:  # each request alone, so that only the one whose rows fail gets the failure
                    for job in jobs:
                        self._answer_alone(job)
                continue
            if self.on_batch is not None:
                self.on_batch(len(rows))
            answers = split_answers(predictions, probabilities, [len(job.rows) for job in jobs])
            for job, result in zip(jobs, answers, strict=True):
                if job.future.set_running_or_notify_cancel():
                    job.future.set_result(result)

    def _answer_alone(self, job: _Job) -> None:
        if job.future.cancelled():  # its caller's time budget ran out meanwhile
            return
        try:
            result = self._predict(job.rows)
        except BaseException as exc:
            _fail(job, exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(job.rows))
        if job.future.set_running_or_notify_cancel():
            job.future.set_result(result)


def _fail(job: _Job, exc: BaseException) -> None:
    if job.future.set_running_or_notify_cancel():  # from here on its caller can no longer cancel it
        job.future.set_exception(exc)
