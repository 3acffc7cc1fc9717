"""MLflow's scoring protocol (what `mlflow models serve` answers at `POST /invocations`) on the platform's hot path,
so an MLflow scoring client, or a request copied from MLflow's docs, works unchanged.

Paths: `POST /api/v1/models/{name}/invocations`, and `POST /invocations` for the deployment's default model
(MODELWORKS_DEFAULT_MODEL, else the only registered model; with several and no setting, a 404 naming them). Both
take `?version=` and `?alias=` as /predict does.

Bodies, as MLflow's pyfunc scoring server reads them (mlflow/pyfunc/scoring_server), Content-Type application/json:
- `{"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}`: pandas' orient="split" ("index"
  optional and ignored; without "columns" the values are in signature order);
- `{"dataframe_records": [{"column": value, ...}, ...]}`: pandas' orient="records";
- `{"instances": ...}`: a list of rows (lists in signature order, or objects of column: value), a list of values
  (a model of one input), or an object of columns `{"column": [values...]}`;
- `{"inputs": ...}`: the same shapes (MLflow's tensor input).
Exactly one of the four. `"params"` is accepted and otherwise ignored, as MLflow ignores it for a model whose
predict takes no parameters (scikit-learn's), with one use here: `"params": {"key": ...}` is the routing key (the
native body's "key", V2's parameters.key) that keeps a caller on one arm of a rollout or experiment. Other
top-level fields are ignored, as MLflow ignores them. Content-Type text/csv: a header row of column names, then
one row per line (numbers, True/False and empty cells read as pandas.read_csv reads them). Any other Content-Type
is read as JSON, as /predict reads every body; a charset other than UTF-8 is a 415.

Answer: `{"predictions": [...]}`, the labels (classifiers) or values (regressors), as MLflow's pyfunc scoring server
answers for a scikit-learn model; the request id in X-Request-ID. Errors take MLflow's shape,
`{"error_code": "BAD_REQUEST", "message": "..."}` (its REST error codes: RESOURCE_DOES_NOT_EXIST for a 404,
TEMPORARILY_UNAVAILABLE for a 503, ...), plus "errors": the field-level detail /predict gives, per row and field.

Why not DRF, and why a translation rather than an endpoint of its own: this is /predict's hot path (see
serving/hotpath.py for why that path skips DRF) with another body and answer. Only the body is translated here,
into the native payload (`{"instances": [objects]}` or `{"inputs": [arrays]}`); everything else is the native
request's, unchanged: the same credential check (API keys with their predict:<model> scopes), one resolution by
alias, rollout or experiment, signature validation, the feature store's input hook, the breaker and fallback, the
prediction log and metrics (serving/services.py). The ASGI front (serving/front.py) answers these requests in its
rounds like /predict's, batched with them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from serving import routing, services
from serving.hotpath import (
    REFUSALS,
    Reply,
    authorize_request,
    checked_routing_key,
    parse_json,
    read_body,
    refusal,
    target_of,
    to_response,
)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXPECTED = (
    "the body must be a JSON object with exactly one of the fields dataframe_split, dataframe_records, instances or "
    "inputs (MLflow 2's scoring protocol)"
)
# MLflow's REST error codes (mlflow.protos.databricks_pb2) for the statuses this endpoint answers.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    409: "RESOURCE_CONFLICT",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",  # rows outside the version's reference data (serving/ood.py)
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}
LISTED_MODELS = 20  # a 404 for /invocations without a default names at most this many models
SHOWN_ERRORS = 5  # field errors spelt out in an error's message (all of them are in "errors")

# The credential check for a scope: the caller ("key:<id>", "user:<id>"), or the 401/403/429/503 to answer.
Check = Callable[[str], Reply | str]


class BadBody(Exception):
    """The body is not one of MLflow's scoring formats."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def mlflow_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message}, headers or {})


def as_mlflow(reply: Reply) -> Reply:
    """A platform error answer ({"detail": ..., "errors"?: [...]}) in MLflow's error shape, with its status and
    headers (Retry-After, WWW-Authenticate)."""
    message = reply.payload["detail"]
    errors = reply.payload.get("errors")
    if errors:
        shown = "; ".join(_described(e) for e in errors[:SHOWN_ERRORS])
        more = f"; and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        message = f"{message}: {shown}{more}"
    answer = mlflow_error(reply.status, message, reply.headers)
    if errors:
        answer.payload["errors"] = errors
    return answer


def _described(problem: dict[str, Any]) -> str:
    where = [f"row {problem['row']}"] if problem.get("row") is not None else []
    if problem.get("field") is not None:
        where.append(str(problem["field"]))
    return f"{', '.join(where)}: {problem['message']}" if where else problem["message"]


# ----------------------------------------------------------------------------------------------- the translation


def native_payload(body: Any) -> tuple[dict[str, list[Any]], str | None]:
    """MLflow's scoring body -> (the native payload, the routing key from params.key). Raises BadBody.

    Only shapes are translated here; the values, the columns and the number of rows are checked against the
    serving version's signature by services.predict_steps, as for /predict (so the errors are the same)."""
    if not isinstance(body, dict):
        raise BadBody(f"{EXPECTED}; got {_kind(body)}")
    given = [name for name in FORMATS if name in body]
    if len(given) != 1:
        raise BadBody(f"{EXPECTED}; got the fields {_fields(body)}")
    (name,) = given
    data = body[name]
    if name == "dataframe_split":
        rows = _split(data)
    elif name == "dataframe_records":
        if not isinstance(data, list):
            raise BadBody(f"dataframe_records must be a list of records (objects of column: value); got {_kind(data)}")
        rows = data
    else:
        rows = _tensor(name, data)
    if not rows:
        raise BadBody(f"{name} holds no rows; send at least one")
    return ({"instances": rows} if isinstance(rows[0], dict) else {"inputs": rows}), _key(body.get("params"))


def _split(data: Any) -> list[Any]:
    if not isinstance(data, dict) or "data" not in data or set(data) - {"columns", "data", "index"}:
        got = f"the fields {_fields(data)}" if isinstance(data, dict) else _kind(data)
        raise BadBody(f"dataframe_split must be an object with 'data' and optionally 'columns' and 'index'; got {got}")
    values, columns = data["data"], data.get("columns")
    if not isinstance(values, list):
        raise BadBody(f"dataframe_split.data must be a list of rows; got {_kind(values)}")
    if columns is None:  # pandas numbers the columns: the values are in the signature's order
        return [row if isinstance(row, list) else [row] for row in values]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadBody("dataframe_split.columns must be a list of column names (strings)")
    rows = []
    for index, row in enumerate(values):
        if not isinstance(row, list):
            row = [row]  # pandas reads a flat list as one column
        if len(row) != len(columns):
            raise BadBody(f"dataframe_split.data row {index} has {len(row)} values for {len(columns)} columns")
        rows.append(dict(zip(columns, row, strict=True)))
    return rows


def _tensor(name: str, data: Any) -> list[Any]:
    """`instances` or `inputs`: rows (lists or objects), the values of a one-input model, or columns."""
    if isinstance(data, list):
        if data and not isinstance(data[0], list | dict):  # [v1, v2, ...]: a column, as MLflow maps it to one input
            if any(isinstance(value, list | dict) for value in data):
                raise BadBody(f"{name} mixes values with rows; send a list of rows or a list of values")
            return [[value] for value in data]
        return data
    if isinstance(data, dict):  # {"column": [values], ...}
        if not data:
            raise BadBody(f"{name} holds no columns")
        columns = list(data.values())
        if all(isinstance(column, list) for column in columns):
            lengths = {len(column) for column in columns}
            if len(lengths) > 1:
                sizes = ", ".join(f"{c!r}: {len(v)}" for c, v in list(data.items())[:10])
                raise BadBody(f"the columns of {name} must have the same number of values ({sizes})")
            return [dict(zip(data, values, strict=True)) for values in zip(*columns, strict=True)]
        if any(isinstance(column, list) for column in columns):
            raise BadBody(f"the columns of {name} must all be lists of values, or all single values (one row)")
        return [dict(data)]
    raise BadBody(f"{name} must be a list of rows or an object of columns; got {_kind(data)}")


def _key(params: Any) -> str | None:
    if not isinstance(params, dict) or "key" not in params:
        return None  # params are ignored, as MLflow ignores them for a model whose predict takes none
    key, problem = checked_routing_key(params["key"])
    if problem is not None:
        raise BadBody(f"params.key {problem}")
    return key


def _fields(body: dict[str, Any]) -> str:
    """The object's field names as an error quotes them: escaped, short, at most ten."""
    shown = ", ".join(repr(name)[:60] for name in list(body)[:10]) or "none"
    return f"{shown}, ..." if len(body) > 10 else shown


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else f"a {type(value).__name__}"


_MEDIA_PARAMETER = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def parse_body(body: bytes, content_type: str | None) -> Any:
    """The request's data: JSON (any Content-Type but text/csv) or CSV (as rows of column: value); a Reply in
    MLflow's error shape when it cannot be read."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    charset = _MEDIA_PARAMETER.search(content_type or "")
    if charset is not None and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
        return mlflow_error(415, f"the body must be UTF-8; got charset {charset.group(1)[:40]!r}")
    if media == "text/csv":
        return _csv(body)
    payload = parse_json(body)
    return as_mlflow(payload) if isinstance(payload, Reply) else payload


def _csv(body: bytes) -> dict[str, list[dict[str, Any]]] | Reply:
    try:
        lines = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        return mlflow_error(400, f"the body is not readable CSV: {exc}")
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return mlflow_error(400, "the CSV body needs a header row of column names and at least one row")
    header, rows = lines[0], lines[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            return mlflow_error(400, f"CSV line {number} has {len(row)} values for {len(header)} columns")
    return {"dataframe_records": [dict(zip(header, map(_cell, row), strict=True)) for row in rows]}


_INTEGER = re.compile(r"[-+]?\d+\Z")


def _cell(text: str) -> Any:
    """A CSV cell as pandas.read_csv reads it: an integer, a float, True/False, empty as missing, else the text."""
    stripped = text.strip()
    if not stripped:
        return None
    if _INTEGER.match(stripped):
        return int(stripped)
    if stripped in ("True", "TRUE", "true"):
        return True
    if stripped in ("False", "FALSE", "false"):
        return False
    try:
        value = float(stripped)
    except ValueError:
        return text
    return None if value != value else value  # NaN: missing, as pandas reads "NaN" and empty cells alike


# ---------------------------------------------------------------------------------------------- the request steps


def invocations_steps(
    name: str | None, body: bytes, content_type: str | None, *, check: Check, version: str | None,
    alias: str | None, request_id: str | None,
) -> services.Steps[Reply]:  # fmt: skip
    """One `POST [/api/v1/models/{name}]/invocations`, from its body to its answer: the credential checked for the
    model's predict scope (`check`), the body translated (native_payload), then served exactly as /predict serves
    (services.predict_steps: routing, validation, log, metrics, breaker)."""
    if name is None:
        chosen = default_model(check)
        if isinstance(chosen, Reply):
            return chosen
        name = chosen
    caller = check(f"predict:{name}")
    if isinstance(caller, Reply):
        return as_mlflow(caller)
    data = parse_body(body, content_type)
    if isinstance(data, Reply):
        return data
    try:
        payload, key = native_payload(data)
    except BadBody as exc:
        return mlflow_error(400, exc.message)
    target = target_of(version, alias)
    if isinstance(target, Reply):
        return as_mlflow(target)
    try:
        result = yield from services.predict_steps(
            model_name=name, payload=payload, version=target[0], alias=target[1], routing_key=key,
            request_id=request_id, caller=caller,
        )  # fmt: skip
    except REFUSALS as exc:
        return as_mlflow(refusal(exc))
    return Reply(200, {"predictions": result.predictions}, {"X-Request-ID": result.request_id})


def default_model(check: Check) -> str | Reply:
    """The model `POST /invocations` scores: MODELWORKS_DEFAULT_MODEL, else the only registered model; else a 404
    saying how to choose, naming the models to a caller who may predict with any of them (predict:*)."""
    configured = settings.MODELWORKS_DEFAULT_MODEL
    if configured:
        return configured
    try:
        names = routing.registered_model_names(LISTED_MODELS + 1)
    except routing.RouteUnavailable as exc:
        return mlflow_error(503, exc.message, {"Retry-After": str(exc.retry_after)})
    if len(names) == 1:
        return names[0]
    how = "name the model in the path, POST /api/v1/models/<name>/invocations, or set MODELWORKS_DEFAULT_MODEL"
    if not names:
        return mlflow_error(404, f"no model is registered yet, so /invocations has none to score: register one, {how}")
    verdict = check("predict:*")
    denied = verdict if isinstance(verdict, Reply) else None
    if denied is not None and denied.status != 403:
        return as_mlflow(denied)
    if denied is None:
        listed = ", ".join(names[:LISTED_MODELS]) + (", ..." if len(names) > LISTED_MODELS else "")
        return mlflow_error(404, f"several models are registered ({listed}) and none is the default: {how}")
    return mlflow_error(404, f"several models are registered and none is the default: {how}")


@csrf_exempt
def invocations(request: HttpRequest, name: str | None = None) -> HttpResponse:
    """The Django view (session-authenticated callers, tests, runserver); the ASGI front answers requests with an
    API key or token itself, with the same steps."""
    if request.method != "POST":
        return to_response(mlflow_error(405, "use POST", {"Allow": "POST"}))
    body = read_body(request)
    if isinstance(body, Reply):
        return to_response(as_mlflow(body))
    steps = invocations_steps(
        name,
        body,
        request.META.get("CONTENT_TYPE"),
        check=lambda scope: authorize_request(request, scope),
        version=request.GET.get("version"),
        alias=request.GET.get("alias"),
        request_id=getattr(request, "request_id", None) or request.META.get("HTTP_X_REQUEST_ID"),
    )
    return to_response(services.run_steps(steps))
