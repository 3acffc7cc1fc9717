"""Serving policies: how a model is served (cache, inference budget, breaker). Changed in the console; audited."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from registry import audit
from serving.models import ServingPolicy

AUDITED = tuple(f.name for f in ServingPolicy._meta.fields if f.name != "id")


@transaction.atomic
def serving_policy_save(*, policy: ServingPolicy, actor: Any = None) -> ServingPolicy:
    """Create or change a model's policy (validated by the caller's form), recorded with what it was before."""
    stored = ServingPolicy.objects.select_for_update().filter(pk=policy.pk).first() if policy.pk else None
    before = audit.snapshot(stored, AUDITED) if stored is not None else None
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
