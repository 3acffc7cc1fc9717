"""Asynchronous predictions: a `POST /api/v1/models/{name}/predict` with `Prefer: respond-async` (or `"async": true`
in the body) is answered 202 at once, and a Celery worker on its own queue (MODELWORKS_ASYNC_QUEUE) answers it.

The worker runs the very steps the synchronous endpoint runs (serving/hotpath.py `predict_steps`, with the same
caller, request id, ?version= and ?alias=), so its answer is the one the synchronous request would have got: the same
routing, the same prediction log row (its route and outcome), the same 400 with the same detail for bad input (a
failed job holding that answer). Only what is about the asynchronous request itself is answered at submission: who
may ask (401/403), a body too large (413), a callback URL that may not receive it (400).

The one place that writes these rows. Results (and the inputs they came from) expire MODELWORKS_ASYNC_RESULT_TTL_S
after they are ready: 410 until beat deletes them (`async_predictions_purge`), 404 after.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from config.queueing import TaskNotQueued, enqueue_on
from registry.webhooks import sending, signing, targets
from serving import hotpath, metrics, services
from serving.models import AsyncPrediction, AsyncStatus, CallbackStatus
from serving.prediction_log import prediction_log

logger = logging.getLogger(__name__)

PATH = "/api/v1/predictions/{id}"
FINISHED = (AsyncStatus.SUCCEEDED, AsyncStatus.FAILED)


class RetryLater(Exception):
    """This callback attempt failed in a way another may not, and attempts remain."""


def _field_error(field: str, message: str) -> hotpath.Reply:
    return hotpath.error(400, f"'{field}' {message}", [{"row": None, "field": field, "message": message}])


def _callback_url(payload: Any) -> str | hotpath.Reply:
    """The body's `callback_url` ("" for none), or the 400 when it is not one a callback may go to (the webhooks'
    SSRF guard: checked again before every attempt, on a fresh resolution)."""
    url = payload.get("callback_url") if isinstance(payload, dict) else None
    if url is None:
        return ""
    if not isinstance(url, str) or not url or len(url) > 2000:
        return _field_error("callback_url", "must be an http(s) URL of at most 2000 characters")
    try:
        targets.check_target(url)
    except targets.TargetUnresolved:
        pass  # perhaps later: each attempt checks it again
    except targets.TargetRefused as exc:
        return _field_error("callback_url", str(exc))
    return url


def async_prediction_submit(
    *, name: str, body: bytes, version: str | None, alias: str | None, request_id: str | None, caller: str
) -> hotpath.Reply:
    """Store the request and queue it: the 202 with its id and Location, or the 400 / 503 answered instead."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        payload = None  # the worker answers the synchronous endpoint's 400 for it
    if isinstance(payload, dict) and not isinstance(payload.get("async", False), bool):
        return _field_error("async", "must be true or false")
    callback = _callback_url(payload)
    if isinstance(callback, hotpath.Reply):
        return callback
    now = timezone.now()
    lifetime = settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S + settings.MODELWORKS_ASYNC_RESULT_TTL_S
    row = AsyncPrediction.objects.create(
        model_name=name, version=version, alias=alias, body=body, request_id=services.new_request_id(request_id),
        caller=caller, callback_url=callback, callback_secret=signing.new_secret() if callback else "",
        callback_status=CallbackStatus.PENDING if callback else CallbackStatus.NONE, created_at=now,
        expires_at=now + timedelta(seconds=lifetime),
    )  # fmt: skip
    from serving.tasks import run_async_prediction  # tasks import this module

    try:
        enqueue_on(run_async_prediction, settings.MODELWORKS_ASYNC_QUEUE, str(row.pk),
                   expires=settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S)  # fmt: skip
    except TaskNotQueued as exc:
        AsyncPrediction.objects.filter(pk=row.pk).delete()
        return hotpath.error(503, str(exc), Retry_After=str(exc.retry_after))
    metrics.ASYNC_PREDICTIONS.labels("queued").inc()
    location = PATH.format(id=row.pk)
    answer = {"id": str(row.pk), "status": AsyncStatus.QUEUED, "request_id": row.request_id, "location": location}
    if callback:
        # Shown once: the callback's Standard Webhooks signature is made with it (registry/webhooks/signing.py).
        answer["callback_secret"] = row.callback_secret
    return hotpath.Reply(202, answer, {"Location": location, "X-Request-ID": row.request_id})


def async_prediction_run(*, prediction_id: str) -> bool:
    """Answer one queued request as the synchronous endpoint would; False when it was answered already (a task
    delivered again). A worker lost mid-run leaves the row running: the redelivered task runs it again (the
    prediction log keeps one row per request id and inputs)."""
    now = timezone.now()
    claimed = AsyncPrediction.objects.filter(pk=prediction_id, status__in=[AsyncStatus.QUEUED, AsyncStatus.RUNNING])
    if not claimed.update(status=AsyncStatus.RUNNING, started_at=now, attempts=F("attempts") + 1):
        return False  # answered already, or purged
    row = AsyncPrediction.objects.get(pk=prediction_id)
    waited = max(0.0, (now - row.created_at).total_seconds())
    metrics.ASYNC_WAIT.observe(waited)
    if waited > settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S:
        _finish(row, _not_run(waited))
        return True
    steps = hotpath.predict_steps(row.model_name, bytes(row.body), version=row.version, alias=row.alias,
                                  request_id=row.request_id, caller=row.caller, may_hand_over=False)  # fmt: skip
    reply = services.run_steps(steps)
    prediction_log().flush()  # the worker may be stopped before its buffer's next flush
    _finish(row, reply)
    return True


def _not_run(waited: float) -> hotpath.Reply:
    limit = settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S
    detail = f"not run: it waited {waited:.0f} s in the queue, over the limit of {limit} s; send it again"
    return hotpath.error(503, detail, Retry_After="5")


def _finish(row: AsyncPrediction, reply: hotpath.Reply) -> None:
    """Record the answer (as its JSON: exactly the synchronous body) and queue the callback, if any."""
    status = AsyncStatus.SUCCEEDED if reply.status == 200 else AsyncStatus.FAILED
    now = timezone.now()
    AsyncPrediction.objects.filter(pk=row.pk).update(
        status=status, status_code=reply.status, answer=json.loads(reply.body), finished_at=now,
        expires_at=now + timedelta(seconds=settings.MODELWORKS_ASYNC_RESULT_TTL_S),
    )  # fmt: skip
    metrics.ASYNC_PREDICTIONS.labels(status).inc()
    if row.callback_url:
        from serving.tasks import deliver_prediction_callback

        try:
            enqueue_on(deliver_prediction_callback, settings.MODELWORKS_ASYNC_QUEUE, str(row.pk))
        except TaskNotQueued as exc:
            _callback_done(row.pk, CallbackStatus.FAILED, f"not queued ({exc})", 0)


def as_json(row: AsyncPrediction) -> dict[str, Any]:
    """What `GET /api/v1/predictions/{id}` shows (never the callback's secret, nor its URL's path and query)."""
    body: dict[str, Any] = {
        "id": str(row.pk), "model": row.model_name, "status": row.status, "request_id": row.request_id,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "expires_at": row.expires_at.isoformat(),
    }  # fmt: skip
    if row.status in FINISHED:
        body["status_code"] = row.status_code
        body["answer"] = row.answer
    if row.callback_url:
        body["callback"] = {"url": targets.mask_url(row.callback_url), "status": row.callback_status,
                            "outcome": row.callback_outcome, "attempts": row.callback_attempts}  # fmt: skip
    return body


def callback_body(row: AsyncPrediction) -> bytes:
    return json.dumps({"type": "prediction.finished", "data": {k: v for k, v in as_json(row).items()
                                                               if k != "callback"}}).encode()  # fmt: skip


def async_prediction_callback_attempt(*, prediction_id: str, attempt: int) -> bool:
    """Attempt number `attempt` of the callback: True when delivered; False when refused for good or out of attempts;
    RetryLater when another is worth making (retried from the queue, as webhooks are: no worker waits)."""
    row = AsyncPrediction.objects.filter(pk=prediction_id).first()
    if row is None or row.callback_status != CallbackStatus.PENDING:
        return row is not None and row.callback_status == CallbackStatus.DELIVERED
    result = sending.post(url=row.callback_url, secret=row.callback_secret, message_id=f"pred_{row.pk.hex}",
                          body=callback_body(row))  # fmt: skip
    outcome = f"{result.outcome} after {attempt} attempt(s)"
    if result.delivered:
        _callback_done(row.pk, CallbackStatus.DELIVERED, outcome, attempt)
        return True
    if result.retryable and attempt < sending.webhook_attempts():
        AsyncPrediction.objects.filter(pk=row.pk).update(
            callback_attempts=attempt, callback_outcome=f"{outcome}, retrying"
        )
        raise RetryLater(outcome)
    logger.warning("callback of async prediction %s failed: %s", row.pk, outcome)
    _callback_done(row.pk, CallbackStatus.FAILED, outcome, attempt)
    return False


def _callback_done(pk: uuid.UUID, status: str, outcome: str, attempts: int) -> None:
    AsyncPrediction.objects.filter(pk=pk).update(
        callback_status=status, callback_outcome=outcome[:200], callback_attempts=attempts
    )


def async_predictions_purge(*, now=None) -> dict[str, int]:
    """Beat's sweep: requests still queued past the queue timeout fail (a lost message: their callers are told);
    rows past `expires_at` are deleted."""
    now = timezone.now() if now is None else now
    stale = now - timedelta(seconds=settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S)
    failed = 0
    for row in AsyncPrediction.objects.filter(status=AsyncStatus.QUEUED, created_at__lt=stale).iterator():
        if AsyncPrediction.objects.filter(pk=row.pk, status=AsyncStatus.QUEUED).update(status=AsyncStatus.RUNNING):
            _finish(row, _not_run((now - row.created_at).total_seconds()))  # claimed: a late task finds it answered
            failed += 1
    deleted, _ = AsyncPrediction.objects.filter(expires_at__lt=now).delete()
    return {"failed": failed, "deleted": deleted}


# ------------------------------------------------------------------------------------------------------ selector


def async_prediction_for(*, prediction_id: str, caller: str, user: Any = None) -> AsyncPrediction | None:
    """The row, for the caller that asked or an admin (`user`: the authenticated user, if a user calls); None
    otherwise, as for an id that does not exist (a 404 either way: ids are not to be probed)."""
    try:
        row = AsyncPrediction.objects.filter(pk=uuid.UUID(prediction_id)).first()
    except ValueError:
        return None
    if row is None:
        return None
    if row.caller == caller:
        return row
    from registry import permissions

    if user is not None and getattr(user, "is_authenticated", False) and permissions.holds(user, permissions.ADMIN):
        return row
    return None
