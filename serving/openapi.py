"""OpenAPI for serving: the API-key security scheme, and the hot-path endpoints written out by hand.

The prediction views are plain Django views (serving/hotpath.py, the Open Inference Protocol's in serving/v2.py and
MLflow's scoring protocol's in serving/mlflow.py), so drf-spectacular cannot see them; the postprocessing hook below
adds their description to the generated schema, so clients and schemathesis know them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "serving.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; keys are created in the admin or with `manage.py create_api_key`",
        }


class UserTokenScheme(OpenApiAuthenticationExtension):
    target_class = "serving.tokens.UserTokenAuthentication"
    name = "TokenAuth"

    def get_security_definition(self, auto_schema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`, from POST /api/v1/auth/token/; expires after MODELWORKS_TOKEN_TTL",
        }


_ERROR = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer", "nullable": True},
                    "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "required": ["detail"],
}
_VALUE = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}], "nullable": True}
_PREDICT_REQUEST = {
    "type": "object",
    "description": "Exactly one of `instances` (objects by feature name) or `inputs` (arrays in signature order).",
    "properties": {
        "instances": {"type": "array", "items": {"type": "object", "additionalProperties": _VALUE}},
        "inputs": {"type": "array", "items": {"type": "array", "items": _VALUE}},
        "key": {
            "oneOf": [{"type": "string", "maxLength": 200}, {"type": "integer"}],
            "description": "routing key (user or entity id): keeps a caller on one arm of a rollout or experiment",
        },
        "async": {"type": "boolean", "description": "true: answered over the queue (202), as `Prefer: respond-async`"},
        "callback_url": {
            "type": "string",
            "maxLength": 2000,
            "description": "asynchronous only: where the finished prediction is POSTed, signed (README "
            '"Asynchronous predictions")',
        },
    },
}
_ASYNC_ACCEPTED = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["queued"]},
        "request_id": {"type": "string"},
        "location": {"type": "string"},
        "callback_secret": {"type": "string", "description": "with a callback_url only: shown this once"},
    },
    "required": ["id", "status", "request_id", "location"],
}
_PREDICT_RESPONSE = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": {}},
        "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "classes": {"type": "array", "items": {}},
        "cached": {"type": "array", "items": {"type": "boolean"}},
        "route": {"type": "string"},
    },
    "required": ["model", "version", "request_id", "predictions", "cached", "route"],
}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
    "description": "a version number, served as an explicit pin (archived versions included)",
}
_SECURITY = [{"ApiKeyAuth": []}, {"tokenAuth": []}, {"cookieAuth": []}]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", **_json(_ERROR)} for code in codes}


PREDICT = {
    "post": {
        "operationId": "predict",
        "summary": "Predict with a model's production version (or a pinned version or alias)",
        "tags": ["serving"],
        "security": _SECURITY,
        "parameters": [
            _NAME,
            {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
            {"name": "alias", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "`respond-async`: answered over the queue (202 and a Location)",
            },  # fmt: skip
        ],
        "requestBody": {"required": True, **_json(_PREDICT_REQUEST)},
        "responses": {
            "200": {"description": "predictions", **_json(_PREDICT_RESPONSE)},
            "202": {"description": "queued: GET the Location for the answer", **_json(_ASYNC_ACCEPTED)},
            **_errors(400, 401, 403, 404, 409, 413, 429, 503),
        },
    }
}


_MLFLOW_ERROR = {
    "type": "object",
    "description": "MLflow's error shape (its REST error codes); `errors` is the field-level detail /predict gives",
    "properties": {
        "error_code": {"type": "string"},
        "message": {"type": "string"},
        "errors": _ERROR["properties"]["errors"],
    },
    "required": ["error_code", "message"],
}
_ROWS = {"type": "array", "items": {"oneOf": [{"type": "array", "items": _VALUE}, {"type": "object"}, _VALUE]}}
_MLFLOW_REQUEST = {
    "type": "object",
    "description": "MLflow's scoring body: exactly one of dataframe_split, dataframe_records, instances or inputs "
    "(docs/mlflow-scoring.md); params are ignored but for params.key, the routing key.",
    "properties": {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": _ROWS,
                "index": {"type": "array", "items": {}},
            },
            "required": ["data"],
        },
        "dataframe_records": {"type": "array", "items": {"type": "object", "additionalProperties": _VALUE}},
        "instances": {"oneOf": [_ROWS, {"type": "object", "additionalProperties": {"type": "array", "items": _VALUE}}]},
        "inputs": {"oneOf": [_ROWS, {"type": "object", "additionalProperties": {"type": "array", "items": _VALUE}}]},
        "params": {"type": "object", "properties": {"key": _PREDICT_REQUEST["properties"]["key"]}},
    },
}


def _invocations(named: bool) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "invocations" if named else "invocationsDefaultModel",
            "summary": "Score with MLflow's protocol (mlflow models serve's /invocations): the same hot path as predict"
            + ("" if named else ", for the deployment's default model (MODELWORKS_DEFAULT_MODEL, or the only one)"),
            "tags": ["serving"],
            "security": _SECURITY,
            "parameters": [
                *([_NAME] if named else []),
                {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
                {"name": "alias", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _MLFLOW_REQUEST},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": {
                    "description": "predictions",
                    **_json(
                        {
                            "type": "object",
                            "properties": {"predictions": {"type": "array", "items": {}}},
                            "required": ["predictions"],
                        }
                    ),
                },
                **{
                    str(code): {"description": "error", **_json(_MLFLOW_ERROR)}
                    for code in (400, 401, 403, 404, 409, 413, 415, 429, 503)
                },
            },
        }
    }


_V2_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_V2_TENSOR_REQUEST = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "a feature of the signature (or one [n, features] tensor)"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },  # fmt: skip
        "data": {"type": "array", "items": {}, "description": "flat or nested, row-major"},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
            "description": "binary_data_size: the tensor's bytes follow the JSON header (Triton's binary extension)",
        },
    },
    "required": ["name", "shape", "datatype"],
}
_V2_INFER_REQUEST = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "key": {
                    "oneOf": [{"type": "string", "maxLength": 200}, {"type": "integer"}],
                    "description": "routing key (user or entity id), as the native endpoint's `key`: keeps a caller "
                    "on one arm of a rollout or experiment; keyless without it",
                }
            },
        },
        "inputs": {"type": "array", "items": _V2_TENSOR_REQUEST, "minItems": 1},
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
    "required": ["inputs"],
}
_V2_INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {"route": {"type": "string", "description": "as the native answer's `route`"}},
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": ["predict", "predict_proba"]},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "data": {"type": "array", "items": {}},
                },
                "required": ["name", "datatype", "shape", "data"],
            },
        },
    },
    "required": ["model_name", "model_version", "id", "outputs"],
}
_V2_TENSOR_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["name", "datatype", "shape"],
}
_V2_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": _V2_TENSOR_METADATA},
        "outputs": {"type": "array", "items": _V2_TENSOR_METADATA},
        "parameters": {"type": "object"},
    },
    "required": ["name", "versions", "platform", "inputs", "outputs"],
}
_V2_READY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}, "error": {"type": "string"}},
    "required": ["name", "ready"],
}


def _v2_errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", **_json(_V2_ERROR)} for code in codes}


def _v2_paths(version: bool) -> dict[str, dict[str, Any]]:
    base = "/v2/models/{name}" + ("/versions/{version}" if version else "")
    parameters = [_NAME, _VERSION] if version else [_NAME]
    suffix = "Version" if version else ""
    which = "this version" if version else "the version the model's traffic is routed to (production, or its arm)"
    return {
        f"{base}/infer": {
            "post": {
                "operationId": f"v2Infer{suffix}",
                "summary": "Infer (Open Inference Protocol / KServe V2): routed, fallen back and logged as a "
                "native prediction",
                "tags": ["serving"],
                "security": _SECURITY,
                "parameters": parameters,
                "requestBody": {"required": True, **_json(_V2_INFER_REQUEST)},
                "responses": {
                    "200": {"description": "outputs", **_json(_V2_INFER_RESPONSE)},
                    **_v2_errors(400, 401, 403, 404, 409, 413, 429, 503),
                },
            }
        },
        base: {
            "get": {
                "operationId": f"v2ModelMetadata{suffix}",
                "summary": f"Model metadata (V2) of {which}",
                "tags": ["serving"],
                "security": _SECURITY,
                "parameters": parameters,
                "responses": {
                    "200": {"description": "metadata", **_json(_V2_METADATA)},
                    **_v2_errors(400, 401, 403, 404, 409, 503),
                },
            }
        },
        f"{base}/ready": {
            "get": {
                "operationId": f"v2ModelReady{suffix}",
                "summary": f"Model readiness (V2) of {which}: loaded and servable in this process",
                "tags": ["serving"],
                "security": _SECURITY,
                "parameters": parameters,
                "responses": {
                    "200": {"description": "ready", **_json(_V2_READY)},
                    "503": {"description": "not ready, or cannot be served now", **_json(_V2_READY)},
                    **_v2_errors(400, 401, 403, 404, 409),
                },
            }
        },
    }


PREDICTION = {
    "get": {
        "operationId": "prediction",
        "summary": "An asynchronous prediction's status and, once finished, the synchronous endpoint's answer",
        "tags": ["serving"],
        "security": _SECURITY,
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}],
        "responses": {
            "200": {
                "description": "queued, running, succeeded or failed; `answer` and `status_code` once finished",
                **_json({
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"}, "model": {"type": "string"},
                        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
                        "status_code": {"type": "integer"}, "answer": {"type": "object"},
                        "request_id": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"},
                    },
                    "required": ["id", "status"],
                }),
            },
            **_errors(401, 404, 410),
        },
    }
}  # fmt: skip


def add_hot_path(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: describe the plain-Django prediction endpoints (native, V2, MLflow)."""
    paths = result.setdefault("paths", {})
    paths["/api/v1/models/{name}/predict"] = PREDICT
    paths["/api/v1/predictions/{id}"] = PREDICTION
    paths["/api/v1/models/{name}/invocations"] = _invocations(named=True)
    paths["/invocations"] = _invocations(named=False)
    paths.update(_v2_paths(version=False))
    paths.update(_v2_paths(version=True))
    return result
