"""OpenAPI for serving: the API-key security scheme, and the hot-path endpoints written out by hand.

The prediction views are plain Django views (serving/hotpath.py), so drf-spectacular cannot see them; the
postprocessing hook below adds their description to the generated schema, so clients and schemathesis know them.
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
        "key": {"type": "string", "description": "routing key (user or entity id)"},
    },
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


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "error", **_json(_ERROR)} for code in codes}


PREDICT = {
    "post": {
        "operationId": "predict",
        "summary": "Predict with a model's production version (or a pinned version or alias)",
        "tags": ["serving"],
        "security": [{"ApiKeyAuth": []}, {"tokenAuth": []}, {"cookieAuth": []}],
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
            },
            {"name": "version", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
            {"name": "alias", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {"required": True, **_json(_PREDICT_REQUEST)},
        "responses": {
            "200": {"description": "predictions", **_json(_PREDICT_RESPONSE)},
            **_errors(400, 401, 403, 404, 409, 413, 429, 503),
        },
    }
}


def add_hot_path(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: describe the plain-Django prediction endpoint."""
    result.setdefault("paths", {})["/api/v1/models/{name}/predict"] = PREDICT
    return result
