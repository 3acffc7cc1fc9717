"""Serving's business logic: one prediction request from routed version to logged answer.

The HTTP layer (serving/hotpath.py) only authenticates, parses and formats; everything a test needs to reach is here.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Generator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.utils import timezone

from features.serving import resolve_feature_inputs
from registry.models import ModelVersion
from serving import metrics, prediction_cache, routing, shadow
from serving.model_cache import LoadedModel, ModelLoadFailed, model_cache
from serving.models import PredictionLog, ServingPolicy
from serving.prediction_log import LogEntry, masked_inputs, prediction_log
from serving.validation import InputError, rows_from_payload

REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_POLICY = ServingPolicy()


class Unavailable(Exception):
    """Neither the routed version nor a fallback can answer now."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _InferenceFailed(Exception):
    pass


class InferenceTimeout(Exception):
    """A model call did not answer within the model's inference budget."""


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A step of a request asking its driver for one model call: the answer, (predictions, probabilities) for
    exactly these rows, is sent back into the steps, or the call's failure is thrown into them.

    A request is written once, as a generator of steps, and run by either of two drivers: `run_steps` here (one
    request on the calling thread, the model call through the version's micro-batcher thread) or the ASGI front's
    request processor (serving/asgi.py), which advances many requests together and makes one model call per version
    for all of them.
    """

    loaded: LoadedModel
    rows: list[list[Any]]
    budget_seconds: float
    announced: bool  # this request announced itself to the version's micro-batcher (see MicroBatcher.announce)


Answer = tuple[list[Any], list[list[float]] | None]
T = TypeVar("T")
Steps = Generator[ModelCall, Answer, T]


@dataclass(frozen=True)
class Prediction:
    model: str
    version: int
    request_id: str
    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None
    cached: list[bool]
    route: str
    features: list[dict[str, list[str]]] | None = None  # feature store: per row, inputs looked up/computed/missing

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
            "predictions": self.predictions,
        }
        if self.probabilities is not None:
            body["probabilities"] = self.probabilities
            body["classes"] = self.classes
        body["cached"] = self.cached
        body["route"] = self.route
        if self.features is not None:
            body["features"] = self.features
        return body


_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count()


def _new_id_prefix() -> None:  # a forked worker (gunicorn --preload) must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id(supplied: str | None = None) -> str:
    """The client's request id when it is well-formed (retries then log once), else a fresh one: a random
    per-process prefix and a counter, unique without a system call per request."""
    if supplied and REQUEST_ID.match(supplied):
        return supplied
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def policy_of(version: ModelVersion) -> ServingPolicy:
    return getattr(version.model, "serving_policy", None) or DEFAULT_POLICY


def run_steps(steps: Steps[T]) -> T:
    """Run one request's steps on this thread; each model call goes through the version's micro-batcher."""
    try:
        call = next(steps)
        while True:
            try:
                answer = batched_call(call)
            except Exception as exc:  # the steps decide what a failed call means (breaker, fallback)
                call = steps.throw(exc)
            else:
                call = steps.send(answer)
    except StopIteration as finished:
        return finished.value


def batched_call(call: ModelCall) -> Answer:
    future = call.loaded.batcher.submit(call.rows, announced=call.announced)
    try:
        return future.result(timeout=call.budget_seconds)
    except FutureTimeout:
        future.cancel()
        raise InferenceTimeout from None


def predict(**request: Any) -> Prediction:
    """One prediction request answered on this thread (see predict_steps for the arguments)."""
    return run_steps(predict_steps(**request))


def predict_steps(
    *,
    model_name: str,
    payload: Any,
    version: int | None = None,
    alias: str | None = None,
    routing_key: str | None = None,
    request_id: str | None = None,
) -> Steps[Prediction]:
    """Route, validate, answer from cache or the (micro-batched, breaker-guarded) model, log, count."""
    started = time.perf_counter()
    try:
        route = resolve(model_name, version=version, alias=alias, key=routing_key)
    except Exception as exc:  # answered without reaching a model: still a prediction request, counted
        count_unserved(model_name, exc, started)
        if isinstance(exc, routing.RouteUnavailable):
            raise Unavailable(exc.message, exc.retry_after) from None
        raise
    try:
        loaded = model_cache().get(route.version)
    except ModelLoadFailed as exc:
        _log(new_request_id(request_id), model_name, route.version, route, routing_key, [], "error", started,
             outputs={}, cached=False)  # fmt: skip
        metrics.PREDICTIONS.labels(model_name, str(route.version.version), "error").inc()
        if route.reason == "pinned":
            raise routing.RouteError(409, exc.message) from None
        raise Unavailable(exc.message, exc.retry_after) from None
    loaded.batcher.announce()
    announced = True
    outcome = "error"
    rows: list[list[Any]] | None = None
    try:
        try:
            payload, feature_report = resolve_feature_inputs(payload, loaded.signature)  # entity ids -> features
            rows = rows_from_payload(
                payload, loaded.signature, settings.MODELWORKS_MAX_BATCH, float_limit=loaded.float_limit
            )
        except InputError:
            outcome = "invalid"
            raise
        policy = policy_of(route.version)
        use_cache = settings.MODELWORKS_PREDICTION_CACHE and policy.deterministic
        keys = [prediction_cache.row_key(loaded.cache_key, row) for row in rows] if use_cache else []
        hits = prediction_cache.lookup(keys) if use_cache else {}
        cached = [key in hits for key in keys] if use_cache else [False] * len(rows)
        missing = [row for row, hit in zip(rows, cached, strict=True) if not hit]
        served, reason = loaded, route.reason
        fresh_predictions: list[Any] = []
        fresh_probabilities: list[list[float]] | None = None
        if missing:
            announced = False
            served, fresh_predictions, fresh_probabilities, reason = yield from _infer(
                loaded, route, missing, policy.inference_budget_ms / 1000
            )
            if use_cache and served is loaded:
                missing_keys = [key for key, hit in zip(keys, cached, strict=True) if not hit]
                fresh = zip(missing_keys, fresh_predictions, fresh_probabilities or [None] * len(missing), strict=True)
                prediction_cache.store({key: [p, probs] for key, p, probs in fresh}, policy.cache_ttl_seconds)
        else:
            loaded.batcher.withdraw()
            announced = False
        predictions, probabilities = _merge(keys, cached, hits, fresh_predictions, fresh_probabilities)
        if use_cache:
            metrics.CACHE.labels(model_name, "hit").inc(sum(cached))
            metrics.CACHE.labels(model_name, "miss").inc(len(missing))
        outcome = "ok" if served is loaded else "fallback"
        result = Prediction(
            model=model_name,
            version=served.version,
            request_id=new_request_id(request_id),
            predictions=predictions,
            probabilities=probabilities,
            classes=served.classes if probabilities is not None else None,
            cached=cached,
            route=reason,
            features=feature_report,
        )
        outputs = {"predictions": predictions, "probabilities": probabilities}
        _log(result.request_id, model_name, served, route, routing_key, rows, outcome, started,
             outputs=outputs, cached=bool(cached) and all(cached))  # fmt: skip
        metrics.PREDICTION_ROWS.labels(model_name, str(served.version)).inc(len(rows))
        # The live split needs no counter of its own: modelworks_predictions_total counts requests per version.
        if route.split is not None and route.split.shadow_version_id is not None:
            shadow.maybe_mirror(route, rows, result)
        return result
    except InputError:  # the model refused the caller's values (see _call): a 400, as at validation
        outcome = "invalid"
        raise
    except Unavailable:
        # Nobody answered: logged too, so a rollout's analysis counts the routed version's failures.
        _log(new_request_id(request_id), model_name, loaded, route, routing_key, rows or [], "error", started,
             outputs={}, cached=False)  # fmt: skip
        raise
    finally:
        if announced:
            loaded.batcher.withdraw()
        metrics.PREDICTIONS.labels(model_name, str(loaded.version), outcome).inc()
        metrics.LATENCY.labels(model_name).observe(time.perf_counter() - started)


def count_unserved(model_name: str, exc: Exception, started: float) -> None:
    """Count a request that never reached a model: 'not_found' for a model, alias or version that does not exist
    (the caller's mistake), 'error' for everything else (the database away, a version that cannot be served).
    A model this process has never routed is labelled '_unknown', so callers cannot mint label values."""
    label = model_name if routing.is_known_model(model_name) else "_unknown"
    outcome = "not_found" if isinstance(exc, routing.RouteError) and exc.status == 404 else "error"
    metrics.PREDICTIONS.labels(label, "", outcome).inc()
    metrics.LATENCY.labels(label).observe(time.perf_counter() - started)


def resolve(model_name: str, **request: Any) -> routing.Route:
    """routing.resolve, with one answer for a version that cannot be served, from the first request on: the
    caller's explicit pin is a conflict only the caller can resolve by asking for another version (409); a version
    the server routes here (production, an alias, a split's arm) is the server's failure, to retry later (503)."""
    try:
        return routing.resolve(model_name, **request)
    except routing.RouteError as exc:
        if exc.status == 409 and request["version"] is None:
            raise Unavailable(exc.message, settings.MODELWORKS_MODEL_RETRY_S) from None
        raise


def _log(request_id, model_name, served, route, routing_key, rows, outcome, started, *, outputs, cached) -> None:
    prediction_log().append(
        LogEntry(
            request_id=request_id,
            model_name=model_name,
            version=served.version,
            routing_key=(routing_key or "")[:200],
            inputs=masked_inputs(rows, served.signature),
            outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000,
            cached=cached,
            route_reason=route.reason[:100],
            outcome=outcome,
            created_at=timezone.now(),
        )
    )


def _merge(keys, cached, hits, fresh_predictions, fresh_probabilities):
    """Cached and freshly computed answers back in request order."""
    if not keys:
        return fresh_predictions, fresh_probabilities
    fresh = zip(fresh_predictions, fresh_probabilities or [None] * len(fresh_predictions), strict=True)
    merged = [hits[key] if hit else next(fresh) for key, hit in zip(keys, cached, strict=True)]
    probabilities = [probability for _, probability in merged]
    return [prediction for prediction, _ in merged], (probabilities if probabilities[0] is not None else None)


def _call(loaded: LoadedModel, rows: list[list[Any]], budget_seconds: float, *, announced: bool) -> Steps[Answer]:
    """The model's answer for these rows. Its failures and time-outs count against its breaker; the caller's bad
    input (InputError, or a value too large for the model's arithmetic) does not: it is answered with a 400."""
    if not loaded.breaker.allow():
        if announced:
            loaded.batcher.withdraw()
        loaded.breaker_state()
        raise _InferenceFailed("circuit breaker open")
    try:
        predictions, probabilities = yield ModelCall(loaded, rows, budget_seconds, announced)
    except InferenceTimeout:
        loaded.breaker.record(False)
        loaded.breaker_state()
        raise _InferenceFailed(f"inference took longer than its {budget_seconds * 1000:.0f} ms budget") from None
    except Exception as exc:
        refused = exc if isinstance(exc, InputError) else _input_fault(exc)
        if refused is not None:
            loaded.breaker.release()
            raise refused from None
        loaded.breaker.record(False)
        loaded.breaker_state()
        raise _InferenceFailed(f"inference failed: {type(exc).__name__}") from exc
    loaded.breaker.record(True)
    loaded.breaker_state()
    return predictions, probabilities


def _input_fault(exc: Exception) -> InputError | None:
    """The model refusing the caller's values as too large for its arithmetic: scikit-learn's input check after a
    step (a scaler) took a finite value past float64, or any value past a float32 model's range."""
    if isinstance(exc, ValueError) and "infinity or a value too large" in str(exc):
        message = "a value is too large for this model's arithmetic (it overflows to infinity inside the model)"
        return InputError([{"row": None, "field": None, "message": message}])
    return None


def _infer(loaded: LoadedModel, route: routing.Route, rows, budget_seconds: float):
    """The routed version's answer, or the fallback's when it fails or its breaker is open."""
    try:
        predictions, probabilities = yield from _call(loaded, rows, budget_seconds, announced=True)
        return loaded, predictions, probabilities, route.reason
    except _InferenceFailed as failure:
        fallback = routing.fallback_for(route)
        if fallback is None:
            raise Unavailable(
                f"{route.version}: {failure}; no fallback version", loaded.breaker.retry_after()
            ) from None
        try:
            backup = model_cache().get(fallback)
            rows = rows_from_payload(
                {"inputs": rows}, backup.signature, settings.MODELWORKS_MAX_BATCH, float_limit=backup.float_limit
            )
            predictions, probabilities = yield from _call(backup, rows, policy_of(fallback).inference_budget_ms / 1000,
                                               announced=False)  # fmt: skip
        except (_InferenceFailed, InputError, ModelLoadFailed) as second:
            raise Unavailable(f"{route.version}: {failure}; fallback {fallback}: {second}",
                              loaded.breaker.retry_after()) from None  # fmt: skip
        return backup, predictions, probabilities, f"fallback:{failure}"


def prediction_log_prune(*, before, chunk: int = 10_000) -> int:
    """Delete log rows older than `before` in chunks, so a large prune never holds one long lock."""
    from django.db import transaction

    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(PredictionLog.objects.filter(created_at__lt=before).values_list("pk", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += PredictionLog.objects.filter(pk__in=ids).delete()[0]
