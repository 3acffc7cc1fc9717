"""The web process's ASGI front: prediction requests are answered here, everything else by Django.

Why: under gunicorn's threaded worker each prediction took a thread of its own through gunicorn's HTTP parser and
Django's request handling, and the threads spent their time handing the GIL to one another. On two cores that was
about half the CPU, and at 64 connections the p99 latency was 140-210 ms (bench/serving.py). Here uvicorn's event
loop (uvloop, httptools: C) reads the requests, and one request-processor thread per process answers the prediction
requests that have arrived, all of them together: each request's steps (serving/hotpath.py, serving/services.py)
run to their model call, the calls are grouped by model version into one model call each, then every request is
finished. These rounds are the platform's only micro-batching, and it needs no waiting: what arrived while one round
ran is the next round's batch, and a lone request is answered at once. (The Django path, one request per thread,
calls the model inline: serving/services.py, run_steps.)

Which requests: POST to `/api/v1/models/{name}/predict`, `/v2/models/{name}[/versions/{v}]/infer` and MLflow's
`[/api/v1/models/{name}]/invocations` (serving/mlflow.py) that carry an API key or a token; the paths are the
URLconf's own patterns (serving/urls.py), so the two cannot drift. They are tried in that order, so a native
prediction costs one match, as before.
Everything else (the admin, the management API, the session-authenticated browsable predict, health, metrics) goes
to Django's WSGI application on a thread pool, as under gunicorn's threads before.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from a2wsgi.wsgi import build_environ
from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import connections
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from serving import mlflow, ood, prediction_cache, urls, v2
from serving.hotpath import Reply, authorize, error, predict_steps, presents_credential, too_large, wants_async
from serving.metrics import HTTP_RESPONSES
from serving.per_process import PerProcess
from serving.services import Answer as ModelAnswer
from serving.services import InferenceTimeout, ModelCall, Steps

logger = logging.getLogger(__name__)

# The URLconf's patterns (relative to the site root, where config/urls.py includes serving.urls) with the path's "/".
PREDICT_PATH = re.compile(rf"^/{urls.PREDICT_PATTERN}")
INFER_PATH = re.compile(rf"^/{urls.INFER_PATTERN}")
INVOCATIONS_PATH = re.compile(rf"^/{urls.INVOCATIONS_PATTERN}")
_INVOCATIONS_ENDINGS = ("/invocations", "/invocations/")
COMMON_HEADERS = [(b"content-type", b"application/json")]  # and the security policy's (Front adds them)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


# ------------------------------------------------------------------------------------------ the request processor


@dataclass(slots=True, eq=False)
class Pending:
    """A request handed to the processor: its steps, and where its answer goes (a future of an event loop)."""

    steps: Steps[Reply]
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    reply: Reply | None = None


class RequestProcessor:
    """One thread that answers queued requests in rounds: every request's steps up to its model call, one model
    call per version (at most `max_rows` rows each) for all of them, then the rest of every request."""

    def __init__(self, max_rows: int) -> None:
        self._max_rows = max_rows
        self._queue: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="request-processor", daemon=True)
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        self._queue.put(pending)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Close the processor thread's database connections, on that thread (worker exit, tests' teardown)."""
        closed = threading.Event()

        def steps() -> Steps[Reply]:
            connections.close_all()
            closed.set()
            return Reply(200, None)
            yield  # noqa: B901 - a generator of no model calls, like any request's steps

        self.submit(Pending(steps()))
        closed.wait(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with prediction_cache.round_writes():  # sent after the answers: no client waits for them
                try:
                    answer_round(batch, self._max_rows)
                except BaseException:  # noqa: BLE001 - this thread must outlive any one round
                    logger.exception("a request-processor round failed")
                _deliver(batch)
            _mend_connections()
            # Let the event loop have the GIL now to send these answers and read new requests, rather than after
            # the interpreter's switch interval (5 ms) into the next round.
            time.sleep(0)


def answer_round(requests: list[Pending], max_rows: int) -> None:
    """Answer these requests together (the processor's round; callable directly, on any thread). The round's
    out-of-distribution scoring is one call per version, its prediction-cache lookups go to Redis as one MGET, its
    cache writes as one pipeline when it ends."""
    with prediction_cache.round_writes():
        calls = [(pending, call) for pending in requests if (call := _advance(pending, True, None)) is not None]
        while calls:  # a request can make a second call (its fallback version's) in a later pass
            calls = _model_calls(_cache_lookups(_ood_scorings(calls)), max_rows)


def _ood_scorings(calls: list[tuple[Pending, Any]]) -> list[tuple[Pending, Any]]:
    """Score the rows of every request asking for it (the round's rows of one version in one call); the steps they
    ask for next (cache lookups, model calls)."""
    scorings = [(pending, step) for pending, step in calls if isinstance(step, ood.OodScoring)]
    if not scorings:
        return calls
    verdicts = ood.score_all([step for _, step in scorings])
    calls = [(pending, step) for pending, step in calls if not isinstance(step, ood.OodScoring)]
    for (pending, _), verdict in zip(scorings, verdicts, strict=True):
        step = _advance(pending, True, verdict)
        if step is not None:
            calls.append((pending, step))
    return calls


def _cache_lookups(calls: list[tuple[Pending, Any]]) -> list[tuple[Pending, ModelCall]]:
    """Answer every request's cache lookup with one MGET for them all; the model calls they then ask for."""
    lookups = [(pending, step) for pending, step in calls if isinstance(step, prediction_cache.CacheLookup)]
    if not lookups:
        return calls
    found = prediction_cache.fetch([key for _, step in lookups for key in step.keys])
    calls = [(pending, step) for pending, step in calls if not isinstance(step, prediction_cache.CacheLookup)]
    for pending, _ in lookups:
        step = _advance(pending, True, found)
        if step is not None:
            calls.append((pending, step))
    return _cache_lookups(calls)  # after its lookup a request asks for a model call or is answered: one recursion


def _model_calls(calls: list[tuple[Pending, ModelCall]], max_rows: int) -> list[tuple[Pending, Any]]:
    """One model call per version for these requests; the steps they ask for next."""
    resumed = []
    for chunk in _chunks(calls, max_rows):
        for pending, ok, value in _call_model(chunk):
            call = _advance(pending, ok, value)
            if call is not None:
                resumed.append((pending, call))
    return resumed


def encode(reply: Reply) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers and body of an answer."""
    body = reply.body
    headers = [*COMMON_HEADERS, (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    return reply.status, headers, body


def _deliver(requests: list[Pending]) -> None:
    """Hand the answers to their event loops: one wake-up per loop for the whole round, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
    for pending in requests:
        if pending.loop is None:
            continue  # no one waits for this answer (the processor's own errands)
        reply = pending.reply or error(500, "internal error while answering this request")
        by_loop.setdefault(pending.loop, []).append((pending.future, encode(reply)))
    for loop, answers in by_loop.items():
        loop.call_soon_threadsafe(_resolve_all, answers)


def _resolve_all(answers: list[tuple[asyncio.Future, Any]]) -> None:
    for future, answer in answers:
        if not future.done():  # not cancelled by a client that went away
            future.set_result(answer)


def _advance(pending: Pending, ok: bool, value: Any) -> ModelCall | None:
    """Run the request's steps to its next model call (None when it has its answer)."""
    try:
        return pending.steps.send(value) if ok else pending.steps.throw(value)
    except StopIteration as finished:
        pending.reply = finished.value
    except Exception:
        logger.exception("prediction request failed")
        pending.reply = error(500, "internal error while answering this request")
    return None


def _chunks(calls: list[tuple[Pending, ModelCall]], max_rows: int) -> Iterator[list[tuple[Pending, ModelCall]]]:
    """The calls grouped by model version, each group cut into chunks of at most max_rows rows (a request with
    more rows than that is a chunk of its own)."""
    by_version: dict[int, list[tuple[Pending, ModelCall]]] = {}
    for pending, call in calls:
        by_version.setdefault(id(call.loaded), []).append((pending, call))
    for group in by_version.values():
        chunk: list[tuple[Pending, ModelCall]] = []
        rows = 0
        for pending, call in group:
            if chunk and rows + len(call.rows) > max_rows:
                yield chunk
                chunk, rows = [], 0
            chunk.append((pending, call))
            rows += len(call.rows)
        yield chunk


def split_answers(
    predictions: list[Any], probabilities: list[list[float]] | None, sizes: list[int]
) -> Iterator[ModelAnswer]:
    """One shared call's answers cut back into each request's own, in order (`sizes`: rows per request)."""
    start = 0
    for size in sizes:
        end = start + size
        yield predictions[start:end], None if probabilities is None else probabilities[start:end]
        start = end


def _call_model(chunk: list[tuple[Pending, ModelCall]]) -> list[tuple[Pending, bool, Any]]:
    """One model call for the chunk's rows; each request gets exactly its rows' answers, or the failure. When the
    shared call fails, each request is called alone, so that only the request whose rows fail gets the failure."""
    loaded = chunk[0][1].loaded
    rows = [row for _, call in chunk for row in call.rows]
    started = time.perf_counter()
    try:
        predictions, probabilities = loaded.predict(rows)
    except Exception as exc:
        if len(chunk) == 1:
            return [(chunk[0][0], False, exc)]
        return [_call_alone(pending, call) for pending, call in chunk]
    elapsed = time.perf_counter() - started
    loaded.record_call(len(rows))
    own = split_answers(predictions, probabilities, [len(call.rows) for _, call in chunk])
    return [
        (pending, False, InferenceTimeout()) if elapsed > call.budget_seconds else (pending, True, answer)
        for (pending, call), answer in zip(chunk, own, strict=True)
    ]


def _call_alone(pending: Pending, call: ModelCall) -> tuple[Pending, bool, Any]:
    """One request's rows in a model call of their own (its time budget counts this call only: the failed shared
    call was a neighbour's doing)."""
    started = time.perf_counter()
    try:
        answer = call.loaded.predict(call.rows)
    except Exception as exc:
        return pending, False, exc
    elapsed = time.perf_counter() - started
    call.loaded.record_call(len(call.rows))
    if elapsed > call.budget_seconds:
        return pending, False, InferenceTimeout()
    return pending, True, answer


def _mend_connections() -> None:
    """Drop a database connection that broke during the round, so the next round reconnects (the processor's
    thread keeps its connection between rounds; no request cycle closes it). Not Django's
    close_if_unusable_or_obsolete: with DB_CONN_MAX_AGE=0, as web pods run, that would reconnect every round."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


request_processor = PerProcess(lambda: RequestProcessor(settings.MODELWORKS_BATCH_MAX_ROWS))


# ------------------------------------------------------------------------------------------------ the ASGI front


def _authenticated(
    scope_name: str, authorization: str, api_key: str | None, steps: Callable[[str], Steps[Reply]], *, v2_shape: bool
):  # fmt: skip
    """The request's steps, made for the caller its credential names; or the refusal."""
    caller = authorize(authorization, api_key, scope_name)
    if isinstance(caller, Reply):
        return v2.as_v2(caller) if v2_shape else caller
    return (yield from steps(caller))


class Front:
    """The ASGI application: prediction requests with a credential to the processor, the rest to `django`."""

    def __init__(self, django: ASGIApp) -> None:
        self._django = django

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._steps(scope)
            if handler is not None:
                policy = security_policy(scope)
                if policy is not None:  # else Django is to answer it (a Host it refuses)
                    policy_headers, redirect = policy
                    if redirect is not None:
                        await _send(send, handler[0], redirect, [])
                    else:
                        await self._answer(scope, receive, send, *handler, policy_headers)
                    return
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self._django(scope, receive, send)

    def _steps(self, scope: Scope) -> tuple[str, Callable[[bytes], Steps[Reply]]] | None:
        """Which handler ("predict", "infer" or "invocations") answers this request and how, once its body is read;
        or None when Django is to answer it."""
        path = scope["path"]
        predict, infer = PREDICT_PATH.match(path), None
        if predict is None:
            infer = INFER_PATH.match(path)
            if infer is None:
                return self._invocations(scope, path)
        headers = {name: value for name, value in scope["headers"] if name in _WANTED}
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        api_key = headers[b"x-api-key"].decode("latin-1") if b"x-api-key" in headers else None
        if not presents_credential(authorization, api_key):
            return None  # the admin session (CSRF applies) or a 401: Django's view answers both
        request_id = headers[b"x-request-id"].decode("latin-1") if b"x-request-id" in headers else None
        if predict is not None:
            if b"prefer" in headers and wants_async(headers[b"prefer"].decode("latin-1")):
                return None  # an asynchronous prediction: Django's view stores and queues it (serving/asynchronous.py)
            name = predict["name"]
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return "predict", lambda body: _authenticated(
                f"predict:{name}", authorization, api_key,
                lambda caller: predict_steps(name, body, version=_last(query, "version"), alias=_last(query, "alias"),
                                             request_id=request_id, caller=caller),
                v2_shape=False,
            )  # fmt: skip
        name, version = infer["name"], infer["version"]
        header_length = headers.get(b"inference-header-content-length")
        return "infer", lambda body: _authenticated(
            f"predict:{name}", authorization, api_key,
            lambda caller: v2.infer_steps(
                name, version, body, request_id=request_id, caller=caller,
                header_length=None if header_length is None else header_length.decode("latin-1"),
            ),
            v2_shape=True,
        )  # fmt: skip

    def _invocations(self, scope: Scope, path: str) -> tuple[str, Callable[[bytes], Steps[Reply]]] | None:
        """MLflow's scoring request (serving/mlflow.py), when this is one that carries a credential. Other paths
        (Django's) are told apart by their ending first: the pattern's optional prefix makes a failing match cost
        more than the two matches before it."""
        if not path.endswith(_INVOCATIONS_ENDINGS):
            return None
        invocations = INVOCATIONS_PATH.match(path)
        if invocations is None:
            return None
        headers = {name: value for name, value in scope["headers"] if name in _WANTED_BY_INVOCATIONS}
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        api_key = headers[b"x-api-key"].decode("latin-1") if b"x-api-key" in headers else None
        if not presents_credential(authorization, api_key):
            return None  # the admin session (CSRF applies) or a 401: Django's view answers both
        request_id = headers[b"x-request-id"].decode("latin-1") if b"x-request-id" in headers else None
        content_type = headers[b"content-type"].decode("latin-1") if b"content-type" in headers else None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return "invocations", lambda body: mlflow.invocations_steps(
            invocations["name"], body, content_type,
            check=lambda scope_name: authorize(authorization, api_key, scope_name),
            version=_last(query, "version"), alias=_last(query, "alias"), request_id=request_id,
        )  # fmt: skip

    async def _answer(
        self, scope: Scope, receive, send, handler: str, make_steps: Callable[[bytes], Steps[Reply]],
        policy: list[tuple[bytes, bytes]],
    ) -> None:  # fmt: skip
        try:
            body = await _read_body(scope, receive)
            if body is None:
                return  # the client went away
            if isinstance(body, Reply):
                answer = encode(body)
            else:
                loop = asyncio.get_running_loop()
                future: asyncio.Future = loop.create_future()
                request_processor().submit(Pending(make_steps(body), loop, future))
                answer = await future
                if answer[0] == 0:  # HAND_OVER: an asynchronous prediction, which Django's view stores and queues
                    await self._django(scope, _replay(body, receive), send)
                    return
        except Exception:
            HTTP_RESPONSES.labels(handler, "500").inc()  # uvicorn answers it
            raise
        await _send(send, handler, answer, policy)


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


async def _send(send, handler: str, answer: Answer, policy: list[tuple[bytes, bytes]]) -> None:
    """Send an answer of the front, with the security policy's headers, and count it."""
    status, headers, content = answer
    HTTP_RESPONSES.labels(handler, str(status)).inc()
    await send({"type": "http.response.start", "status": status, "headers": headers + policy})
    await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive):
    """`receive` for an application handed a request whose body the front has read: that body, then the client's
    own messages (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict:
        return pending.pop() if pending else await receive()

    return replayed


_WANTED = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"inference-header-content-length", b"prefer"})
_WANTED_BY_INVOCATIONS = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"content-type"})


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None  # as Django's QueryDict.get


async def _read_body(scope: Scope, receive) -> bytes | Reply | None:
    """The body, a 413 answer when it is over DATA_UPLOAD_MAX_MEMORY_SIZE, or None when the client disconnected."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return too_large(int(value))
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return too_large(None)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def security_policy(scope: Scope) -> tuple[list[tuple[bytes, bytes]], Answer | None] | None:
    """What Django's SecurityMiddleware does to this request: the headers it adds to the answer (HSTS, nosniff,
    Referrer-Policy, Cross-Origin-Opener-Policy) and the redirect to https it answers instead (or None); None when
    the request's Host is refused (Django is to answer that). Django's own code decides, on the request as Django
    would see it (a2wsgi's environ)."""
    policy = _security_policy()
    if policy is None:
        return [], None
    if not policy.by_scheme:
        return policy.headers[False], None
    secure = _SchemeProbe(_scheme_environ(scope, policy.proxy_header)).is_secure()
    if not secure and policy.middleware.redirect:
        environ = build_environ(scope, None)
        environ["wsgi.input"] = io.BytesIO()
        request = WSGIRequest(environ)
        try:
            redirect = policy.middleware.process_request(request)
        except Exception:  # noqa: BLE001 - DisallowedHost: Django answers its 400
            return None
        if redirect is not None:
            redirect = policy.middleware.process_response(request, redirect)
            headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in redirect.items()]
            return [], (redirect.status_code, [*headers, (b"content-length", b"0")], b"")
    return policy.headers[secure], None


def _scheme_environ(scope: Scope, proxy_header: tuple[str, str] | None) -> dict[str, str]:
    """The part of a2wsgi's environ (build_environ) that HttpRequest.scheme reads: the WSGI scheme and the
    SECURE_PROXY_SSL_HEADER header, named and joined as build_environ does. A fifth of build_environ's time."""
    if proxy_header is None:
        return build_environ(scope, None)  # no header, or one build_environ does not name HTTP_*
    key, upper = proxy_header
    environ = {"wsgi.url_scheme": scope.get("scheme", "http")}
    if not key:
        return environ  # no SECURE_PROXY_SSL_HEADER: the scheme alone decides
    size = len(upper)  # header names are tokens (ASCII: the HTTP parser refuses others), so lengths must match
    values = [
        value.decode("latin-1")
        for name, value in scope["headers"]
        if len(name) == size and name.decode("latin-1").upper().replace("-", "_") == upper
    ]
    if values:
        environ[key] = ",".join(values)
    return environ


class _SchemeProbe(WSGIRequest):
    """What HttpRequest.is_secure reads (META, the WSGI scheme) and nothing else: cheap enough for every request."""

    def __init__(self, environ: dict) -> None:  # not WSGIRequest's, which would parse the rest
        self.environ = self.META = environ


@functools.cache
def _security_policy() -> SimpleNamespace | None:
    """Django's SecurityMiddleware as configured, and the headers it adds to an http and an https answer; None when
    the middleware is not installed (Django's pages then get none of them either)."""
    if "django.middleware.security.SecurityMiddleware" not in settings.MIDDLEWARE:
        return None
    middleware = SecurityMiddleware(lambda request: HttpResponse())
    headers = {}
    for secure in (False, True):
        response = HttpResponse()
        before = set(response.headers)
        middleware.process_response(SimpleNamespace(is_secure=lambda secure=secure: secure), response)
        headers[secure] = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items()
            if name not in before
        ]
    by_scheme = bool(middleware.redirect) or headers[False] != headers[True]
    proxy = settings.SECURE_PROXY_SSL_HEADER
    proxy_header = None  # (its environ key, the header's name upper-cased with "_" for "-"), when that is simple
    if not proxy:
        proxy_header = ("", "")
    elif isinstance(proxy, tuple | list) and len(proxy) == 2 and isinstance(proxy[0], str) and proxy[0][:5] == "HTTP_":
        proxy_header = (proxy[0], proxy[0].removeprefix("HTTP_"))
    return SimpleNamespace(middleware=middleware, headers=headers, by_scheme=by_scheme, proxy_header=proxy_header)


def _forget_security_policy(setting: str, **kwargs: Any) -> None:
    if setting.startswith("SECURE_") or setting == "MIDDLEWARE":
        _security_policy.cache_clear()


setting_changed.connect(_forget_security_policy)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
