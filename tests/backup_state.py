"""What a backup must carry over, read the same way from the original platform and from a restored one.

Run as a script (`python -m tests.backup_state KEY MODEL ROWS_JSON`) it is a fresh process on whatever DATABASE_URL
and ARTIFACT_ROOT say: no cache of the original's can answer for the restored platform.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MODEL = "cancer"


def state() -> dict[str, Any]:
    """Registry, aliases, events, feature values, the prediction log and the API keys, in a stable order."""
    from features.models import FeatureValue
    from monitoring.models import ReferenceDataset
    from registry.models import ModelAlias, ModelVersion, RegisteredModel, RegistryEvent
    from serving.models import ApiKey, PredictionLog

    def rows(queryset, *fields: str) -> list[list[Any]]:
        return [[_plain(value) for value in row] for row in queryset.values_list(*fields)]

    return {
        "models": rows(RegisteredModel.objects.order_by("name"), "name", "task", "gate_rules"),
        "versions": rows(
            ModelVersion.objects.order_by("model__name", "version"),
            "model__name", "version", "sha256", "status", "format", "artifact_path", "metrics", "gate_report",
        ),
        "aliases": rows(ModelAlias.objects.order_by("model__name", "name"), "model__name", "name", "version__version"),
        "events": rows(RegistryEvent.objects.order_by("pk"), "pk", "action", "version__version", "before", "after"),
        "references": rows(ReferenceDataset.objects.order_by("pk"), "version__version", "path", "rows"),
        "feature_values": rows(
            FeatureValue.objects.order_by("view__name", "entity_key", "event_ts"),
            "view__name", "entity_key", "event_ts", "data",
        ),
        "prediction_log": rows(
            PredictionLog.objects.order_by("request_id"), "request_id", "model_name", "version", "outputs"
        ),
        "api_keys": rows(ApiKey.objects.order_by("prefix"), "prefix", "scopes", "revoked_at"),
    }  # fmt: skip


def predictions(client: Any, key: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/models/{MODEL}/predict",
        json.dumps({"instances": rows}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    body = response.json()
    assert response.status_code == 200, body
    return {name: body[name] for name in ("model", "version", "predictions", "probabilities", "cached")}


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


if __name__ == "__main__":
    import django

    django.setup()
    from django.test import Client

    from serving import prediction_log

    key, rows_json = sys.argv[1], sys.argv[2]
    before = state()  # before this process's own predictions join the log
    answer = predictions(Client(HTTP_HOST="localhost"), key, json.loads(rows_json))
    prediction_log.prediction_log().flush()
    print(json.dumps({"predictions": answer, "state": before}))
