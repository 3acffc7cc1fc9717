"""The prediction hot path, deliberately without DRF's generic machinery (and, when served by the ASGI front,
without Django's request handling).

Why: these endpoints are measured (bench/serving.py) against MLflow's scoring server, and DRF's request wrapping,
content negotiation, renderer and throttle classes cost more per request than the whole batched model call of a
small model. So a request here is plain data in, a `Reply` out: `predict_steps` authenticates nothing, parses the
JSON body and calls serving/services.py, and is run by either of two drivers:
- the Django view `predict` below (the browsable/session path, tests, `runserver`), one request per thread, the
  model called inline;
- the ASGI front (serving/front.py), which takes requests carrying an API key or token before Django sees them and
  runs many of them together on one thread, one model call per version for all (config/asgi.py says why).
The OpenAPI description of these endpoints is written out in serving/openapi.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from serving import routing, services
from serving.key_cache import token_cache
from serving.keys import CredentialUnavailable, api_key_lookup, raw_api_key, throttle_retry_after, token_valid
from serving.tokens import refused_detail
from serving.validation import MAX_KEY_LENGTH, InputError, string_problem

MAX_VERSION = 2**31 - 1  # the registry's version column is a Postgres integer


@dataclass(slots=True)
class Reply:
    """An HTTP answer as plain data, so that both drivers can send it."""

    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> bytes:
        # orjson: answers are plain JSON values, and encoding them was the largest single cost left per request.
        try:
            return orjson.dumps(self.payload, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:
            # What orjson refuses and json escapes: a lone surrogate echoed from the request (a V2 "id", a name
            # in an error). Never an exception here: the processor thread sends the answers of a whole round.
            return json.dumps(self.payload, default=_plain_json).encode()


def _plain_json(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def error(status: int, detail: str, errors: list[dict[str, Any]] | None = None, **headers: str) -> Reply:
    payload: dict[str, Any] = {"detail": detail}
    if errors is not None:
        payload["errors"] = errors
    return Reply(status, payload, {name.replace("_", "-"): value for name, value in headers.items()})


def to_response(reply: Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status, content_type="application/json")
    for name, value in reply.headers.items():
        response[name] = value
    return response


def presents_credential(authorization: str, api_key_header: str | None) -> bool:
    """The request carries an API key or a user's token (rather than, say, the admin session's cookie)."""
    scheme = authorization[:8].lower()
    return scheme == "api-key " or scheme[:6] == "token " or bool(api_key_header)


def check_credential(authorization: str, api_key_header: str | None, scope: str) -> Reply | None:
    """None when the API key or token may use `scope`; otherwise the 401/403/429 answer to send, or a 503 with
    Retry-After when the credential cannot be checked now (the database away or hung, nothing in memory for it)."""
    verdict = authorize(authorization, api_key_header, scope)
    return verdict if isinstance(verdict, Reply) else None


def authorize(authorization: str, api_key_header: str | None, scope: str) -> Reply | str:
    """check_credential, answering on success who calls: "key:<id>" or "user:<id>" (the prediction log's caller,
    read off the key or token just checked, so it costs the hot path nothing more)."""
    try:
        return _checked(authorization, api_key_header, scope)
    except CredentialUnavailable as exc:
        return error(503, exc.message, Retry_After=str(exc.retry_after))


def _checked(authorization: str, api_key_header: str | None, scope: str) -> Reply | str:
    raw = raw_api_key(authorization, api_key_header)
    if raw is not None:
        key = api_key_lookup(raw)
        if key is None:
            return error(401, "unknown, expired or revoked API key", WWW_Authenticate="Api-Key")
        if not key.allows(scope):
            return error(403, f"this API key lacks the scope {scope}")
        retry = throttle_retry_after(key)
        if retry is not None:
            return error(429, "rate limit exceeded for this API key", Retry_After=str(retry))
        return f"key:{key.pk}"
    if authorization[:6].lower() == "token ":
        token = authorization[6:].strip()
        if token_valid(token):
            return f"user:{token_cache().user_of(token) or ''}"
        return error(401, refused_detail(token), WWW_Authenticate="Api-Key")
    return error(401, "authentication required: send 'Authorization: Api-Key <key>'", WWW_Authenticate="Api-Key")


def authenticate(request: HttpRequest, scope: str) -> Reply | None:
    """check_credential for a Django request, which may also come from the admin session (as in the browsable API)."""
    verdict = authorize_request(request, scope)
    return verdict if isinstance(verdict, Reply) else None


def authorize_request(request: HttpRequest, scope: str) -> Reply | str:
    """authorize for a Django request: a session's caller is its user."""
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    api_key_header = request.META.get("HTTP_X_API_KEY")
    if not presents_credential(authorization, api_key_header) and request.user.is_authenticated:
        rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})  # the session: CSRF applies
        if rejected is not None:
            return error(403, "CSRF check failed for a session-authenticated request")
        return f"user:{request.user.pk}"
    return authorize(authorization, api_key_header, scope)


def read_body(request: HttpRequest) -> bytes | Reply:
    """The raw body, or the 413 answer when it is over DATA_UPLOAD_MAX_MEMORY_SIZE."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return too_large(length)
    try:
        return request.body
    except RequestDataTooBig:
        return too_large(None)


def too_large(length: int | None) -> Reply:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if length is None:
        return error(413, f"the body is over the limit of {limit} bytes")
    return error(413, f"the body is {length} bytes; the limit is {limit}")


def parse_json(body: bytes) -> Any:
    """The parsed body, or the 400 answer when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, f"the body is not valid JSON: {exc}")
    except RecursionError:
        return error(400, "the body is not valid JSON: nested too deeply")


def version_number(version: str) -> int | None:
    """The version a path or query names ("1", "42"), or None when it is not a positive integer the registry can
    hold (str.isdigit alone accepts "²", which int() refuses)."""
    if not (version.isascii() and version.isdigit()) or len(version) > 10:
        return None
    number = int(version)
    return number if 1 <= number <= MAX_VERSION else None


def _field_error(field: str, message: str) -> Reply:
    return error(400, f"'{field}' {message}", [{"row": None, "field": field, "message": message}])


def target_of(version: str | None, alias: str | None) -> tuple[int | None, str | None] | Reply:
    """The query's (?version=, ?alias=) as (version number, alias), or the 400 answer when they are wrong."""
    if version is not None and alias is not None:
        return error(400, "give either ?version= or ?alias=, not both")
    if version is not None:
        number = version_number(version)
        if number is None:
            return _field_error("version", "must be a positive integer")
        return number, None
    if alias is not None and (problem := string_problem(alias, MAX_KEY_LENGTH)):
        return _field_error("alias", problem)
    return None, alias


def checked_routing_key(key: Any) -> tuple[str | None, str | None]:
    """(the routing key, None), or (None, what is wrong with it): a string or an integer (as its decimal text), valid
    UTF-8 with no NUL and of bounded length; None is no key. The native body's "key" and V2's parameters.key."""
    if key is None:
        return None, None
    if isinstance(key, bool) or not isinstance(key, str | int):
        return None, "must be a string"
    key = key if isinstance(key, str) else str(key)
    problem = string_problem(key, MAX_KEY_LENGTH)
    return (key, None) if problem is None else (None, problem)


def _routing_key(payload: Any) -> str | None | Reply:
    key, problem = checked_routing_key(payload.get("key") if isinstance(payload, dict) else None)
    return key if problem is None else _field_error("key", problem)


# What services.predict_steps raises for a request it refuses (the caller's input, route or the server's state now).
REFUSALS = (InputError, routing.RouteError, services.Unavailable)


def refusal(exc: Exception) -> Reply:
    """The answer to a request services.predict_steps refused (one of REFUSALS), as every protocol's driver gives
    it before putting it in its own shape (serving/mlflow.py)."""
    if isinstance(exc, InputError):
        return error(exc.status, getattr(exc, "detail", "the input does not match the model's signature"), exc.errors)
    if isinstance(exc, services.Unavailable):
        return error(503, exc.message, Retry_After=str(exc.retry_after))
    return error(exc.status, exc.message)  # a RouteError


# What predict_steps answers for a body that asks to be answered asynchronously ("async" other than false): its
# driver hands the request to serving/asynchronous.py, which stores and queues it (a database write the request
# processor's thread must not make). Found in the parsed body, a dict lookup: the synchronous path pays nothing more.
HAND_OVER = Reply(0, None)


def predict_steps(
    name: str, body: bytes, *, version: str | None, alias: str | None, request_id: str | None, caller: str = "",
    may_hand_over: bool = True,
) -> services.Steps[Reply]:  # fmt: skip
    """One authenticated `POST /api/v1/models/{name}/predict`, from its body and query to its answer (HAND_OVER for
    an asynchronous one, unless `may_hand_over` is false: the worker answering it)."""
    payload = parse_json(body)
    if isinstance(payload, Reply):
        return payload
    if may_hand_over and isinstance(payload, dict) and payload.get("async", False) not in (False, None):
        return HAND_OVER
    target = target_of(version, alias)
    if isinstance(target, Reply):
        return target
    key = _routing_key(payload)
    if isinstance(key, Reply):
        return key
    try:
        result = yield from services.predict_steps(
            model_name=name,
            payload=payload,
            version=target[0],
            alias=target[1],
            routing_key=key,
            request_id=request_id,
            caller=caller,
        )
    except REFUSALS as exc:
        return refusal(exc)
    return Reply(200, result.as_json(), {"X-Request-ID": result.request_id})


def wants_async(prefer: str | None) -> bool:
    """`Prefer: respond-async` (RFC 7240): the request asks to be answered asynchronously (serving/asynchronous.py).
    A body's "async" field asks the same (predict_steps answers HAND_OVER)."""
    return bool(prefer) and "respond-async" in prefer.lower()


@csrf_exempt
def predict(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "POST":
        return to_response(error(405, "use POST", Allow="POST"))
    caller = authorize_request(request, f"predict:{name}")
    if isinstance(caller, Reply):
        return to_response(caller)
    body = read_body(request)
    if isinstance(body, Reply):
        return to_response(body)
    version, alias = request.GET.get("version"), request.GET.get("alias")
    request_id = getattr(request, "request_id", None) or request.META.get("HTTP_X_REQUEST_ID")
    reply = HAND_OVER
    if not wants_async(request.META.get("HTTP_PREFER")):
        reply = services.run_steps(
            predict_steps(name, body, version=version, alias=alias, request_id=request_id, caller=caller)
        )
    if reply is HAND_OVER:
        from serving.asynchronous import async_prediction_submit  # which runs this module's predict_steps

        reply = async_prediction_submit(
            name=name, body=body, version=version, alias=alias, request_id=request_id, caller=caller
        )
    return to_response(reply)
