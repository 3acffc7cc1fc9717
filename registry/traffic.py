"""Who holds a model's traffic: the registry's one question before anything changes who serves.

The registry knows aliases and versions; the apps above it (rollouts, experiments) own a model's production traffic
while they run. They register an owner check in their `AppConfig.ready` (the registry never imports them), and every
write that changes who serves traffic — alias moves, rollback, archive, starting a rollout or an experiment — takes
the model's row lock (registry.locking) and asks `traffic_owner` before it acts, so the registry never says one thing
while the router does another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from registry.locking import lock_model
from registry.models import RegisteredModel


@dataclass(frozen=True)
class TrafficOwner:
    """An active rollout or running experiment holding a model's production traffic."""

    kind: str  # "rollout" or "experiment"
    pk: int
    label: str  # what a person reads: "rollout 7", "experiment 'forest-vs-logreg'"
    version_ids: frozenset[int]  # every version it routes traffic to (a rollout's candidate and baseline, the arms)

    def __str__(self) -> str:
        return self.label

    @property
    def key(self) -> str:
        """The owner as the router names it in route reasons: "rollout:7", "experiment:3"."""
        return f"{self.kind}:{self.pk}"

    @property
    def way_out(self) -> str:
        """What a person does to let go of the traffic: "promote or abort rollout 7 first"."""
        if self.kind == "rollout":
            return f"promote or abort {self.label} first"
        if self.kind == "experiment":
            return f"conclude or stop {self.label} first"
        return f"end {self.label} first"


class TrafficConflict(ValidationError):
    """A change refused because another owner holds the model's traffic (or uses the version): the API answers 409
    with field-level detail (`field`), and being a ValidationError, every admin form and command that shows a
    service's refusal shows this one too."""

    def __init__(self, message: str, *, field: str = "model", owner: TrafficOwner | None = None) -> None:
        super().__init__({field: [message]})
        self.message = message
        self.field = field
        self.owner = owner


OwnerCheck = Callable[[int], TrafficOwner | None]
_owner_checks: list[OwnerCheck] = []


def register_owner_check(check: OwnerCheck) -> None:
    """Called by an app that can hold a model's traffic, in its AppConfig.ready."""
    if check not in _owner_checks:
        _owner_checks.append(check)


def traffic_owner(model_id: int) -> TrafficOwner | None:
    """The rollout or experiment holding the model's traffic now, if any. Callers that act on the answer hold the
    model's row lock (lock_model) so that it stays true until they commit."""
    for check in _owner_checks:
        owner = check(model_id)
        if owner is not None:
            return owner
    return None


def claim_model(model: RegisteredModel, *, starting: str) -> RegisteredModel:
    """Lock the model row (inside the caller's transaction) and refuse when a rollout or experiment already holds
    its traffic. Returns the locked row; the caller creates its own rollout/experiment before the transaction ends."""
    locked = lock_model(model.pk)
    owner = traffic_owner(locked.pk)
    if owner is not None:
        raise TrafficConflict(f"cannot start {starting}: {locked.name} already has {owner} running", owner=owner)
    return locked
