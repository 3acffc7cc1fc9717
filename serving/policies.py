"""Serving policies: how a model is served (cache, inference budget, breaker). Each setting checked against its range
in words (the console's form shows the same messages); every change audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from config.durations import format_duration
from registry import audit
from registry.models import RegisteredModel
from serving.models import ServingPolicy

AUDITED = tuple(f.name for f in ServingPolicy._meta.fields if f.name != "id")


POLICY_LIMITS: dict[str, tuple[float, float]] = {
    "cache_ttl_seconds": (0, 30 * 86400),
    "inference_budget_ms": (1, 600_000),
    "breaker_consecutive_failures": (1, 10_000),
    "breaker_error_rate": (0.01, 1),
    "breaker_window_seconds": (1, 86400),
    "breaker_min_requests": (1, 1_000_000),
    "breaker_cooldown_seconds": (1, 86400),
}


def serving_policy_problems(fields: dict[str, Any]) -> dict[str, list[str]]:
    """What is wrong with these policy settings, per field, in words (empty when nothing is)."""
    known = {"deterministic", *POLICY_LIMITS}
    errors: dict[str, list[str]] = {name: ["unknown setting"] for name in sorted(set(fields) - known)}
    if "deterministic" in fields and not isinstance(fields["deterministic"], bool):
        errors["deterministic"] = ["must be true or false"]
    for name, (low, high) in POLICY_LIMITS.items():
        if name not in fields:
            continue
        value = fields[name]
        whole = name != "breaker_error_rate"
        if isinstance(value, bool) or not isinstance(value, int | float) or (whole and value != int(value)):
            errors[name] = ["must be a whole number" if whole else "must be a number"]
        elif not low <= value <= high:
            spell = format_duration if name.endswith("_seconds") else (lambda n: f"{n:,g}")
            errors[name] = [
                f"must be between {spell(int(low) if whole else low)} and {spell(int(high) if whole else high)}"
            ]
    return errors


def serving_policy_set(*, model: RegisteredModel, actor: Any = None, **fields: Any) -> ServingPolicy:
    """Create or change `model`'s serving policy; fields not given keep their value (or the default). Each setting
    is checked against its range and refused in words; nothing is stored when one is wrong. Serving processes pick
    the change up when they next refresh the model's route."""
    if errors := serving_policy_problems(fields):
        raise ValidationError(errors)
    with transaction.atomic():
        policy = ServingPolicy.objects.select_for_update().filter(model=model).first() or ServingPolicy(model=model)
        before = audit.snapshot(policy, AUDITED) if policy.pk else None
        for name, value in fields.items():
            setattr(policy, name, value if name in ("deterministic", "breaker_error_rate") else int(value))
        policy.save()
        audit.record("serving_policy.changed" if before else "serving_policy.created", target=policy, before=before,
                     after=audit.snapshot(policy, AUDITED), actor=actor, source=audit.current_source())  # fmt: skip
    return policy


@transaction.atomic
def serving_policy_delete(*, policy: ServingPolicy, actor: Any = None) -> None:
    """Back to the defaults for the model."""
    before = audit.snapshot(policy, AUDITED)
    if ServingPolicy.objects.filter(pk=policy.pk).delete()[0]:
        audit.record("serving_policy.deleted", target=policy, before=before, after=None, actor=actor,
                     source=audit.current_source())  # fmt: skip
