"""How a running experiment plugs into the router (serving/traffic.py): its split, and who holds a model's traffic.

The router asks `experiment_split(model_id)` at most every MODELWORKS_ROUTE_TTL_MS per process, so it is one query.
"""

from __future__ import annotations

from functools import partial

from experiments import exposures
from experiments.models import ExperimentArm, ExperimentStatus
from serving import traffic


def experiment_split(model_id: int) -> traffic.Split | None:
    rows = list(
        ExperimentArm.objects.filter(experiment__model_id=model_id, experiment__status=ExperimentStatus.RUNNING)
        .select_related("experiment")
        .order_by("position")
    )
    if not rows:
        return None
    experiment = rows[0].experiment
    arms = tuple(traffic.Arm(arm.name, arm.version_id, tuple((low, high) for low, high in arm.ranges)) for arm in rows)
    return traffic.Split(
        owner=experiment.route_owner,
        salt=experiment.salt,
        arms=arms,  # the control first: the router's fallback for buckets no range covers
        keyless_arm=arms[0].name if experiment.keyless_to_control else None,
        on_route=partial(exposures.record, experiment.pk),
    )
