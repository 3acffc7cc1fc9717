"""Serving by entity: a model whose signature maps inputs to feature refs ({"name": "mean radius", "feature":
"patient_tumour:mean_radius"}) may be sent entity ids instead of those inputs.

    {"instances": [{"patient_id": 17}, {"patient_id": 18, "mean radius": 14.2}]}

Inputs a row gives are used as they are (overrides); the others are read with get_online_features (online, then
on-demand, then offline within TTL). The answer says per row which inputs were looked up, computed or missing. A
required (not nullable) input still missing is a 400 naming it.

Serving calls `resolve_feature_inputs` through its input-hook registry (serving/inputs.py): features/apps.py
registers it when the app is ready, so serving never imports this app.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.core.exceptions import ValidationError

from features.retrieval import FeaturesUnavailable, get_online_features, resolve_refs
from serving.services import Unavailable
from serving.validation import InputError


def feature_inputs(signature: dict[str, Any]) -> list[dict[str, Any]]:
    return [feature for feature in signature["inputs"] if "feature" in feature]


def resolve_feature_inputs(payload: Any, signature: dict[str, Any]) -> tuple[Any, list[dict[str, list[str]]] | None]:
    """The payload with feature-backed inputs filled in, and the per-row report; unchanged (and None) when the model
    has no feature refs or the request gives no instances."""
    mapped = feature_inputs(signature)
    if not mapped or not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        return payload, None
    instances = payload["instances"]
    if not instances or not all(isinstance(row, dict) for row in instances):
        return payload, None  # rows_from_payload answers the shape error
    try:
        resolved = resolve_refs([feature["feature"] for feature in mapped])
    except FeaturesUnavailable as exc:
        _unavailable(exc)
    except ValidationError as exc:
        raise InputError(
            [{"row": None, "field": "signature", "message": m} for m in exc.messages], status=409
        ) from None
    join_keys = {view.entity.join_key for _, view, _ in resolved}
    input_names = {feature["name"] for feature in signature["inputs"]}
    entity_rows = [{k: row[k] for k in join_keys if k in row} for row in instances]
    overrides = [{f["feature"]: row[f["name"]] for f in mapped if f["name"] in row} for row in instances]
    try:
        answer = get_online_features(entity_rows, [f["feature"] for f in mapped], overrides=overrides)
    except FeaturesUnavailable as exc:
        _unavailable(exc)
    except ValidationError as exc:
        raise InputError([{"row": None, "field": None, "message": m} for m in exc.messages]) from None
    filled, report, errors = [], [], []
    for index, row in enumerate(instances):
        values = {k: v for k, v in row.items() if k not in join_keys or k in input_names}
        outcome: dict[str, list[str]] = {"looked_up": [], "computed": [], "missing": []}
        for feature in mapped:
            column = answer.features[feature["feature"]]
            source = column.sources[index]
            if source == "request":
                continue
            values[feature["name"]] = column.values[index]
            if source in ("online", "offline"):
                outcome["looked_up"].append(feature["name"])
            elif source == "on_demand":
                outcome["computed"].append(feature["name"])
            else:
                outcome["missing"].append(feature["name"])
                if not feature.get("nullable"):
                    ids = ", ".join(f"{k}={row[k]}" for k in sorted(join_keys) if k in row) or "no entity id given"
                    errors.append({"row": index, "field": feature["name"],
                                   "message": f"feature {feature['feature']} has no value ({ids})"})  # fmt: skip
        filled.append(values)
        report.append(outcome)
    if errors:
        raise InputError(errors[:20])
    return {**payload, "instances": filled}, report


def _unavailable(exc: FeaturesUnavailable) -> NoReturn:
    """A 503 with Retry-After, as for a route that cannot be read: the caller's request is fine, the database is not."""
    raise Unavailable(exc.message, exc.retry_after) from None
