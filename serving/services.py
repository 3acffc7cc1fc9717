"""Serving's business logic: one prediction request from routed version to logged answer.

The HTTP layers (serving/hotpath.py for the native endpoint, serving/v2.py for the Open Inference Protocol) only
authenticate, parse and format; everything a test needs to reach is here. Every prediction, whichever protocol it
came by, is routed once (`route_request`), then served, fallen back, logged and counted by `predict_steps`, so a
rollout's analysis and an experiment's exposures see both protocols alike.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.conf import settings
from django.utils import timezone

from registry.models import ModelVersion
from registry.subjects import stored_key
from serving import inputs, metrics, ood, prediction_cache, routing, shadow
from serving.model_cache import LoadedModel, ModelLoadFailed, model_cache
from serving.models import Outcome, PredictionLog, RouteReason, ServingPolicy
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


INVALID = "invalid"  # the predictions counter's label for a request refused as bad input (a 400; never logged)


@dataclass(frozen=True, slots=True)
class ModelCall:
    """A step of a request asking its driver for one model call: the answer, (predictions, probabilities) for
    exactly these rows, is sent back into the steps, or the call's failure is thrown into them.

    A request is written once, as a generator of steps, and run by either of two drivers: `run_steps` here (one
    request on the calling thread, the Django path, the model called inline) or the ASGI front's request processor
    (serving/front.py), which advances many requests together and makes one model call per version for all of them:
    the front's rounds are the platform's only batching. Both enforce `budget_seconds` alike: the call is timed, and
    one that took longer is answered InferenceTimeout (a failure, counted against the breaker) when it returns.
    """

    loaded: LoadedModel
    rows: list[list[Any]]
    budget_seconds: float


Answer = tuple[list[Any], list[list[float]] | None]
T = TypeVar("T")
# A request's steps yield to their driver its out-of-distribution scoring (ood.verdict_steps), its level-2 cache
# lookup (prediction_cache.lookup_steps) and its model calls: the front's rounds do each for many requests at once.
Steps = Generator[ModelCall | prediction_cache.CacheLookup | ood.OodScoring, Any, T]
TensorDecoder = Callable[[dict[str, Any]], list[list[Any]]]


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
    """Run one request's steps on this thread, each model call inline (`call_inline`)."""
    try:
        call = next(steps)
        while True:
            if isinstance(call, prediction_cache.CacheLookup):
                call = steps.send(prediction_cache.fetch(call.keys))  # never raises: Redis away is all misses
                continue
            if isinstance(call, ood.OodScoring):
                call = steps.send(ood.score_all([call])[0])  # never raises: a failed scorer is no verdict
                continue
            try:
                answer = call_inline(call)
            except Exception as exc:  # the steps decide what a failed call means (breaker, fallback)
                call = steps.throw(exc)
            else:
                call = steps.send(answer)
    except StopIteration as finished:
        return finished.value


def call_inline(call: ModelCall) -> Answer:
    """One request's model call on the calling thread (the Django path serves one request per thread: there is
    nothing to batch it with). The inference budget is enforced by measuring, as in the front's rounds: a call that
    took longer than its budget is a failure (InferenceTimeout, counted against the breaker) once it returns. Not a
    bounded executor: that would add a thread hand-off to every request in order to free a caller early, which the
    front cannot do for its own calls either; a model that hangs holds the thread that called it."""
    started = time.perf_counter()
    answer = call.loaded.predict(call.rows)
    elapsed = time.perf_counter() - started
    call.loaded.record_call(len(call.rows))
    if elapsed > call.budget_seconds:
        raise InferenceTimeout
    return answer


def predict(**request: Any) -> Prediction:
    """One prediction request answered on this thread (see predict_steps for the arguments)."""
    return run_steps(predict_steps(**request))


def route_request(
    model_name: str, *, version: int | None = None, alias: str | None = None, key: str | None = None,
    started: float | None = None,
) -> routing.Route:  # fmt: skip
    """A prediction request's one resolution (see `resolve`), told to the split (an experiment's exposure for `key`).
    A request that fails here never reaches a model and is counted as such (count_unserved). Raises RouteError (a
    404, a pin's 409) or Unavailable (503)."""
    started = time.perf_counter() if started is None else started
    try:
        return resolve(model_name, version=version, alias=alias, key=key)
    except Exception as exc:  # answered without reaching a model: still a prediction request, counted
        count_unserved(model_name, exc, started)
        if isinstance(exc, routing.RouteUnavailable):
            raise Unavailable(exc.message, exc.retry_after) from None
        raise


def predict_steps(
    *,
    model_name: str,
    payload: Any = None,
    version: int | None = None,
    alias: str | None = None,
    routing_key: str | None = None,
    request_id: str | None = None,
    route: routing.Route | None = None,
    tensors: TensorDecoder | None = None,
    started: float | None = None,
    caller: str = "",
) -> Steps[Prediction]:
    """Validate, answer from cache or the (breaker-guarded) model or its fallback, log, count.

    The request is routed here (route_request) unless the caller routed it already (`route`, from route_request, as
    V2 does: it needs the routed signature to decode tensors); either way once. `payload` is the native body
    ({"instances": [...]} or {"inputs": [...]}, passed through the registered input hooks: entity ids to features);
    `tensors`, given instead by V2, decodes the request's rows for the signature of the version that serves.
    `caller` ("key:<id>" or "user:<id>", from the credential the HTTP layer checked) is logged with the request."""
    started = time.perf_counter() if started is None else started
    if route is None:
        route = route_request(model_name, version=version, alias=alias, key=routing_key, started=started)
    outcome = Outcome.ERROR
    loaded: LoadedModel | None = None
    rows: list[list[Any]] | None = None
    try:
        loaded, fell_back = _serving_model(route)
        try:
            if tensors is not None:
                payload, feature_report = {"inputs": tensors(loaded.signature)}, None
            else:
                payload, feature_report = inputs.resolve_inputs(payload, loaded.signature)
            rows = rows_from_payload(
                payload, loaded.signature, settings.MODELWORKS_MAX_BATCH, float_limit=loaded.float_limit
            )
            verdict = yield from ood.verdict_steps(loaded.version_id, model_name, loaded.version, rows)
        except InputError:
            outcome = INVALID
            raise
        policy = policy_of(route.version)
        use_cache = settings.MODELWORKS_PREDICTION_CACHE and policy.deterministic
        keys = [prediction_cache.row_key(loaded.cache_key, row) for row in rows] if use_cache else []
        hits = (yield from prediction_cache.lookup_steps(keys)) if use_cache else {}
        cached = [key in hits for key in keys] if use_cache else [False] * len(rows)
        missing = [row for row, hit in zip(rows, cached, strict=True) if not hit]
        served, reason = loaded, route.reason if fell_back is None else RouteReason.fallback(fell_back)
        fresh_predictions: list[Any] = []
        fresh_probabilities: list[list[float]] | None = None
        if missing:
            served, fresh_predictions, fresh_probabilities, reason = yield from _infer(
                loaded, route, missing, policy.inference_budget_ms / 1000, fell_back
            )
            if use_cache and served is loaded:
                missing_keys = [key for key, hit in zip(keys, cached, strict=True) if not hit]
                fresh = zip(missing_keys, fresh_predictions, fresh_probabilities or [None] * len(missing), strict=True)
                prediction_cache.store({key: [p, probs] for key, p, probs in fresh}, policy.cache_ttl_seconds)
        predictions, probabilities = _merge(keys, cached, hits, fresh_predictions, fresh_probabilities)
        if use_cache:
            if len(missing) < len(rows):
                metrics.CACHE.labels(model_name, "hit").inc(len(rows) - len(missing))
            if missing:
                metrics.CACHE.labels(model_name, "miss").inc(len(missing))
        outcome = Outcome.OK if served is loaded and fell_back is None else Outcome.FALLBACK
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
        _log(result.request_id, model_name, served.version, served.signature, route, routing_key, rows, outcome,
             started, outputs=outputs, cached=bool(cached) and all(cached), caller=caller, ood=verdict)  # fmt: skip
        metrics.PREDICTION_ROWS.labels(model_name, str(served.version)).inc(len(rows))
        # The live split needs no counter of its own: modelworks_predictions_total counts requests per version.
        if route.split is not None and route.split.shadow_version_id is not None:
            shadow.maybe_mirror(route, rows, result)
        return result
    except InputError:  # the model refused the caller's values (see _call): a 400, as at validation
        outcome = INVALID
        raise
    except (Unavailable, routing.RouteError):
        # Nobody answered: logged against the routed version, so a rollout's analysis counts its failures.
        signature = (loaded or route.version).signature
        _log(new_request_id(request_id), model_name, route.version.version, signature, route, routing_key,
             rows or [], Outcome.ERROR, started, outputs={}, cached=False, caller=caller)  # fmt: skip
        raise
    finally:
        metrics.PREDICTIONS.labels(model_name, str(route.version.version), outcome).inc()
        metrics.LATENCY.labels(model_name).observe(time.perf_counter() - started)


def _serving_model(route: routing.Route) -> tuple[LoadedModel, str | None]:
    """The model that answers, and None; or, when the routed version cannot serve (a split's arm the router may not
    give traffic, or a version that fails to load), its fallback's and why, as for a failed model call. A pin asked
    for that version and no other: a pinned version that cannot load is a 409."""
    why, retry_after = route.refused, settings.MODELWORKS_MODEL_RETRY_S
    if why is None:
        try:
            return model_cache().get(route.version), None
        except ModelLoadFailed as exc:
            if route.pinned:
                raise routing.RouteError(409, exc.message) from None
            why, retry_after = exc.message, exc.retry_after
    fallback = routing.fallback_for(route)
    if fallback is None:
        raise Unavailable(f"{why}; no fallback version", retry_after)
    try:
        return model_cache().get(fallback), why
    except ModelLoadFailed as exc:
        raise Unavailable(f"{why}; fallback {fallback}: {exc.message}", min(retry_after, exc.retry_after)) from None


def count_unserved(model_name: str, exc: Exception, started: float) -> None:
    """Count a request that never reached a model: 'not_found' for a model, alias or version that does not exist
    (the caller's mistake), 'error' for everything else (the database away, a version that cannot be served).
    A model this process has never routed is labelled '_unknown', so callers cannot mint label values."""
    label = model_name if routing.is_known_model(model_name) else "_unknown"
    outcome = "not_found" if isinstance(exc, routing.RouteError) and exc.status == 404 else Outcome.ERROR
    metrics.PREDICTIONS.labels(label, "", outcome).inc()
    metrics.LATENCY.labels(label).observe(time.perf_counter() - started)


def resolve(model_name: str, **request: Any) -> routing.Route:
    """routing.resolve, with one answer for a version that cannot be served, from the first request on: the
    caller's explicit pin is a conflict only the caller can resolve by asking for another version (409); a version
    the server routes here (production, an alias) is the server's failure, to retry later (503)."""
    try:
        return routing.resolve(model_name, **request)
    except routing.RouteError as exc:
        if exc.status == 409 and request.get("version") is None:
            raise Unavailable(exc.message, settings.MODELWORKS_MODEL_RETRY_S) from None
        raise


def _log(request_id, model_name, version, signature, route, routing_key, rows, outcome, started, *, outputs,
         cached, caller="", ood=None) -> None:  # fmt: skip
    prediction_log().append(
        LogEntry(
            request_id=request_id,
            model_name=model_name,
            version=version,
            routing_key=stored_key((routing_key or "")[:200]),  # hashed with MODELWORKS_HASH_ROUTING_KEYS
            inputs=masked_inputs(rows, signature),
            outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000,
            cached=cached,
            route_reason=route.reason[:100],
            outcome=outcome,
            created_at=timezone.now(),
            caller=caller,
            ood_scores=None if ood is None else ood.scores,
            ood_flagged=None if ood is None else ood.flagged,
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


def _call(loaded: LoadedModel, rows: list[list[Any]], budget_seconds: float) -> Steps[Answer]:
    """The model's answer for these rows. Its failures and time-outs count against its breaker; the caller's bad
    input (InputError, or a value too large for the model's arithmetic) does not: it is answered with a 400."""
    if not loaded.breaker.allow():
        loaded.breaker_state()
        raise _InferenceFailed("circuit breaker open")
    try:
        predictions, probabilities = yield ModelCall(loaded, rows, budget_seconds)
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


def _infer(loaded: LoadedModel, route: routing.Route, rows, budget_seconds: float, fell_back: str | None):
    """The serving model's answer; when it is the routed version's and it fails (or its breaker is open), the
    fallback's. `fell_back`: the serving model is the fallback already (the routed version could not serve)."""
    try:
        predictions, probabilities = yield from _call(loaded, rows, budget_seconds)
    except _InferenceFailed as failure:
        if fell_back is not None:
            raise Unavailable(f"{route.version}: {fell_back}; fallback {loaded.model_name} v{loaded.version}: "
                              f"{failure}", loaded.breaker.retry_after()) from None  # fmt: skip
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
            predictions, probabilities = yield from _call(backup, rows, policy_of(fallback).inference_budget_ms / 1000)
        except (_InferenceFailed, InputError, ModelLoadFailed) as second:
            raise Unavailable(f"{route.version}: {failure}; fallback {fallback}: {second}",
                              loaded.breaker.retry_after()) from None  # fmt: skip
        return backup, predictions, probabilities, RouteReason.fallback(str(failure))
    reason = route.reason if fell_back is None else RouteReason.fallback(fell_back)
    return loaded, predictions, probabilities, reason


def prediction_log_prune(*, before, chunk: int = 10_000) -> int:
    """Remove log rows (shadow copies too) older than `before`; how many went. On the partitioned log (Postgres)
    whole days go, one DROP each, and the day holding `before` stays whole until a later run; elsewhere rows are
    deleted in chunks, so a large prune never holds one long lock."""
    from serving import partitions
    from serving.retention import delete_older, drop_days_before

    if partitions.is_partitioned():
        return drop_days_before(before).rows
    return delete_older(PredictionLog.objects.all(), "created_at", before, chunk=chunk)


def prediction_log_kept_from(before: datetime) -> datetime:
    """Where a prune up to `before` actually stops: the start of before's day on the partitioned log."""
    from serving import partitions

    return partitions.day_start(partitions.utc_day(before)) if partitions.is_partitioned() else before


def dead_letters_prune(*, before, chunk: int = 10_000) -> int:
    """Delete dead letters kept since before `before` (they hold the refused rows' personal data too)."""
    from serving.models import DeadLetter
    from serving.retention import delete_older

    return delete_older(DeadLetter.objects.all(), "created_at", before, chunk=chunk)
