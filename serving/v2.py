"""The Open Inference Protocol (KServe V2) over REST, so Triton's and KServe's HTTP clients work unchanged.

Inputs are one tensor per feature (named as in the signature, shape [n] or [n, 1]), or one 2-D tensor of shape
[n, features] in signature order. Triton's binary tensor extension is understood for inputs
(Inference-Header-Content-Length). Outputs: "predict" (labels or values) and, for classifiers, "predict_proba".

An inference request is routed, fallen back, logged and counted exactly as a native prediction (one resolution,
serving/services.py): under a rollout or an experiment it takes its arm by the request's `"parameters": {"key": ...}`
(the native body's "key": a user or entity id), and is keyless without it. Model metadata and readiness resolve the
route too, but record nothing (no experiment exposure): they serve no prediction.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from serving import routing, services
from serving.hotpath import (
    Reply,
    authenticate,
    authorize_request,
    checked_routing_key,
    read_body,
    to_response,
    version_number,
)
from serving.model_cache import model_cache
from serving.validation import MAX_KEY_LENGTH, InputError, string_problem

DATATYPES = {"float": "FP64", "int": "INT64", "bool": "BOOL", "category": "BYTES"}
NUMPY_TYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
    "FP64": np.float64,
}  # fmt: skip


def v2_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def v2_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": message}, headers or {})


def as_v2(reply: Reply) -> Reply:
    """A platform error answer ({"detail": ...}) in the protocol's error shape ({"error": ...})."""
    return v2_reply(reply.status, reply.payload["detail"], reply.headers)


def server_live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"live": True})


def server_ready(request: HttpRequest) -> JsonResponse:
    try:
        connection.ensure_connection()
    except Exception:
        return JsonResponse({"ready": False}, status=503)
    return JsonResponse({"ready": True})


def server_metadata(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"name": "modelworks", "version": "1", "extensions": ["binary_tensor_data"]})


def _route(request: HttpRequest, name: str, version: str | None) -> routing.Route | HttpResponse:
    denied = authenticate(request, f"predict:{name}")
    if denied is not None:
        return to_response(as_v2(denied))
    number = None if version is None else version_number(version)
    if version is not None and number is None:
        return v2_error(400, "the model version must be a positive integer")
    try:
        return routing.resolve(name, version=number, record=False)
    except routing.RouteUnavailable as exc:
        response = v2_error(503, exc.message)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except routing.RouteError as exc:
        return v2_error(exc.status, exc.message)


def model_metadata(request: HttpRequest, name: str, version: str | None = None) -> JsonResponse:
    route = _route(request, name, version)
    if isinstance(route, HttpResponse):
        return route
    signature = route.version.signature
    inputs = [{"name": f["name"], "datatype": DATATYPES[f["dtype"]], "shape": [-1]} for f in signature["inputs"]]
    classes = signature.get("outputs", {}).get("classes")
    outputs = [{"name": "predict", "datatype": _label_type(classes) if classes else "FP64", "shape": [-1]}]
    if classes:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes)]})
    return JsonResponse(
        {
            "name": name,
            "versions": [str(route.version.version)],
            "platform": f"sklearn_{route.version.format}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {"classes": classes} if classes else {},
        }
    )


def model_ready(request: HttpRequest, name: str, version: str | None = None) -> JsonResponse:
    route = _route(request, name, version)
    if isinstance(route, HttpResponse):
        return route
    try:
        model_cache().get(route.version)
    except Exception as exc:
        return JsonResponse({"name": name, "ready": False, "error": str(exc)}, status=503)
    return JsonResponse({"name": name, "ready": True})


def _label_type(classes: list[Any]) -> str:
    return "BYTES" if any(isinstance(c, str) for c in classes) else "INT64"


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes] | Reply:
    """The JSON inference header and the binary tensor data after it (Triton's binary extension), if any."""
    if header_length is None:
        header, binary = _json(body), b""
    else:
        text = header_length.strip()
        length = int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None
        if length is None or length > len(body):
            return v2_reply(400, "Inference-Header-Content-Length must be a size within the body")
        header, binary = _json(body[:length]), body[length:]
    if isinstance(header, Reply):
        return header
    if not isinstance(header, dict):
        return v2_reply(400, "the inference request must be a JSON object")
    if not isinstance(header.get("parameters", {}), dict):
        return v2_reply(400, "parameters: must be an object")
    return header, binary


def _json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return v2_reply(400, f"the body is not valid JSON: {exc}")
    except RecursionError:
        return v2_reply(400, "the body is not valid JSON: nested too deeply")


def _bad(name: Any, message: str) -> InputError:
    return InputError([{"row": None, "field": name, "message": message}])


def _elements_fit(datatype: str, values: list[Any]) -> bool:
    """JSON tensor data of the declared datatype: strings for BYTES, true/false for BOOL, integers within the type's
    range for INT and UINT types, numbers within the type's range for FP types (finiteness is the signature's)."""
    if datatype == "BYTES":
        return all(isinstance(v, str) for v in values)
    if datatype == "BOOL":
        return all(isinstance(v, bool) for v in values)
    if datatype.startswith(("INT", "UINT")):
        low, high = int(np.iinfo(NUMPY_TYPES[datatype]).min), int(np.iinfo(NUMPY_TYPES[datatype]).max)
        return all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in values)
    largest = float(np.finfo(NUMPY_TYPES[datatype]).max)
    return all(isinstance(v, int | float) and not isinstance(v, bool) and not abs(v) > largest for v in values)


def _flat(data: Any) -> list[Any] | None:
    """The elements of JSON tensor data, flat (Triton sends nested or flat lists), or None when it is not a list."""
    if not isinstance(data, list):
        return None
    flat, stack = [], [iter(data)]
    while stack:  # not recursive: the nesting depth is the client's to choose
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _tensor(spec: dict[str, Any], binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    name = spec.get("name")
    if not isinstance(name, str) or (problem := string_problem(name, MAX_KEY_LENGTH)):
        raise _bad(None, "each tensor's name must be a string" if not isinstance(name, str) else f"name {problem}")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):  # fmt: skip
        raise _bad(name, "shape must be a list of sizes")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMPY_TYPES):
        raise _bad(name, f"datatype must be one of BYTES, {', '.join(NUMPY_TYPES)}")
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad(name, "parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if datatype not in NUMPY_TYPES:
            raise _bad(name, f"binary {datatype} unsupported")
        itemsize = np.dtype(NUMPY_TYPES[datatype]).itemsize
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size % itemsize:
            raise _bad(name, f"binary_data_size must be a whole number of {datatype} values ({itemsize} bytes each)")
        if offset + size > len(binary):
            raise _bad(name, f"binary_data_size {size} is more than the {len(binary) - offset} bytes left")
        array = np.frombuffer(binary[offset : offset + size], dtype=NUMPY_TYPES[datatype])
        offset += size
    else:
        values = _flat(spec.get("data"))
        if values is None:
            raise _bad(name, "data must be a list of values (or binary_data_size given)")
        if not _elements_fit(datatype, values):
            raise _bad(name, f"data must hold {datatype} values")
        array = np.empty(len(values), dtype=object)
        array[:] = values
    if array.size != math.prod(shape):
        raise _bad(name, f"{array.size} values for shape {shape}")
    return array.reshape(shape), offset


def _rows(body: dict[str, Any], binary: bytes, signature: dict[str, Any]) -> list[list[Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise InputError([{"row": None, "field": "inputs", "message": "must be a non-empty list of tensors"}])
    tensors, offset = {}, 0
    for spec in inputs:
        tensors[spec.get("name")], offset = _tensor(spec, binary, offset)
    names = [f["name"] for f in signature["inputs"]]
    if len(tensors) == 1 and next(iter(tensors.values())).ndim == 2 and names[0] not in tensors:
        matrix = next(iter(tensors.values()))
        return [[_plain(v) for v in row] for row in matrix]
    unknown = [n for n in tensors if n not in names]
    missing = [n for n in names if n not in tensors]
    if unknown or missing:
        problems = [{"row": None, "field": n, "message": "is not a feature of this model"} for n in unknown]
        problems += [{"row": None, "field": n, "message": "is missing"} for n in missing]
        raise InputError(problems)
    columns = [tensors[n].reshape(-1) for n in names]
    if len({len(c) for c in columns}) != 1:
        raise InputError([{"row": None, "field": "inputs", "message": "tensors have different lengths"}])
    return [[_plain(v) for v in row] for row in zip(*columns, strict=True)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def infer_steps(
    name: str,
    version: str | None,
    body: bytes,
    *,
    header_length: str | None,
    request_id: str | None,
    caller: str = "",
) -> services.Steps[Reply]:
    """One authenticated `POST /v2/models/{name}[/versions/{version}]/infer`, from its body to its answer: routed
    once (by parameters.key), then served as the native endpoint serves (services.predict_steps)."""
    number = None if version is None else version_number(version)
    if version is not None and number is None:
        return v2_reply(400, "the model version must be a positive integer")
    started = time.perf_counter()
    split = _split_body(body, header_length)
    if isinstance(split, Reply):
        return split
    header, binary = split
    key, problem = checked_routing_key(header.get("parameters", {}).get("key"))
    if problem is not None:
        return v2_reply(400, f"parameters.key: {problem}")
    try:
        route = services.route_request(name, version=number, key=key, started=started)
        result = yield from services.predict_steps(
            model_name=name, route=route, routing_key=key, started=started,
            tensors=lambda signature: _rows(header, binary, signature),
            request_id=str(header.get("id") or "") or request_id, caller=caller,
        )  # fmt: skip
    except InputError as exc:
        return v2_reply(exc.status, "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in exc.errors))
    except routing.RouteError as exc:
        return v2_reply(exc.status, exc.message)
    except services.Unavailable as exc:
        return v2_reply(503, exc.message, {"Retry-After": str(exc.retry_after)})
    return Reply(200, _outputs(result, header.get("id")))


@csrf_exempt
def infer(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    if request.method != "POST":
        return v2_error(405, "use POST")
    caller = authorize_request(request, f"predict:{name}")
    if isinstance(caller, Reply):
        return to_response(as_v2(caller))
    body = read_body(request)
    if isinstance(body, Reply):
        return to_response(as_v2(body))
    steps = infer_steps(
        name,
        version,
        body,
        header_length=request.META.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"),
        request_id=getattr(request, "request_id", None) or request.META.get("HTTP_X_REQUEST_ID"),
        caller=caller,
    )
    return to_response(services.run_steps(steps))


def _outputs(result: services.Prediction, request_id: Any) -> dict[str, Any]:
    n = len(result.predictions)
    labels_type = _label_type(result.classes) if result.classes else (
        "INT64" if all(isinstance(p, int) for p in result.predictions) else "FP64")  # fmt: skip
    outputs = [{"name": "predict", "datatype": labels_type, "shape": [n], "data": result.predictions}]
    if result.probabilities is not None:
        flat = [p for row in result.probabilities for p in row]
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [n, len(result.classes)], "data": flat})
    # parameters.route: why this version answered, as the native answer's "route" ("fallback:..." when it fell back).
    body = {"model_name": result.model, "model_version": str(result.version), "outputs": outputs,
            "parameters": {"route": result.route}}  # fmt: skip
    body["id"] = str(request_id) if request_id is not None else result.request_id
    return body
