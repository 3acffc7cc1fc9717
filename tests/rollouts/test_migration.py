"""Moving the rollout models from serving to their own app loses nothing: a database at the state before the move
(serving 0005, no rollouts app) with a rollout, its events, a user's permission on rollouts and the admin's history
of one, migrated forward, keeps every row, the content type ids, the permission and the history, and its admin page
still opens."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from rollouts.models import Rollout, RolloutEvent, RolloutStatus

BEFORE_THE_MOVE = [("serving", "0005_prediction_outcome_choices"), ("rollouts", None)]


def migrate(targets=None):
    """Migrate the test database to `targets` (default: every app's latest) and return the state it is in."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    return MigrationExecutor(connection)._create_project_state(with_applied_migrations=True).apps


@pytest.mark.django_db(transaction=True)
def test_rollouts_move_to_their_app_with_rows_permissions_and_admin_history(client, canary_model, baseline, candidate):
    old = migrate(BEFORE_THE_MOVE)
    try:
        with pytest.raises(LookupError):
            old.get_model("rollouts", "Rollout")  # the state before the move: rollouts are serving's
        OldContentType = old.get_model("contenttypes", "ContentType")
        content_type, _ = OldContentType.objects.get_or_create(app_label="serving", model="rollout")
        event_type, _ = OldContentType.objects.get_or_create(app_label="serving", model="rolloutevent")
        rollout = old.get_model("serving", "Rollout").objects.create(
            model_id=canary_model.pk, candidate_id=candidate.pk, baseline_id=baseline.pk, status="running",
            stages=[10, 100], stage_seconds=60, salt="before-the-move", stage_started_at=timezone.now(),
        )  # fmt: skip
        OldEvent = old.get_model("serving", "RolloutEvent")
        OldEvent.objects.create(rollout=rollout, action="created", message="seeded before the move")
        OldEvent.objects.create(
            rollout=rollout, action="stage.started", stage_index=0, figures={"candidate_percent": 10}
        )
        viewer = old.get_model("auth", "User").objects.create(username="ada", is_staff=True, is_active=True)
        permission, _ = old.get_model("auth", "Permission").objects.get_or_create(
            content_type=content_type, codename="view_rollout", defaults={"name": "Can view rollout"}
        )
        viewer.user_permissions.add(permission)
        entry = old.get_model("admin", "LogEntry").objects.create(
            user=viewer, content_type=content_type, object_id=str(rollout.pk), object_repr=f"rollout {rollout.pk}",
            action_flag=CHANGE, change_message="paused it before the move", action_time=timezone.now(),
        )  # fmt: skip
    finally:
        migrate()

    ContentType.objects.clear_cache()
    moved = ContentType.objects.get_for_model(Rollout)
    assert (moved.pk, moved.app_label) == (content_type.pk, "rollouts")
    assert ContentType.objects.get_for_model(RolloutEvent).pk == event_type.pk
    assert not ContentType.objects.filter(app_label="serving", model__in=["rollout", "rolloutevent"]).exists()

    survivor = Rollout.objects.get(pk=rollout.pk)
    assert (survivor.status, survivor.salt, survivor.candidate_id) == (RolloutStatus.RUNNING, "before-the-move",
                                                                       candidate.pk)  # fmt: skip
    assert list(survivor.events.values_list("action", flat=True)) == ["created", "stage.started"]
    assert survivor.candidate_percent == 10.0  # and the router's view of it works on the moved model

    user = get_user_model().objects.get(pk=viewer.pk)
    assert user.has_perm("rollouts.view_rollout") and not user.has_perm("serving.view_rollout")
    history = LogEntry.objects.get(pk=entry.pk)
    assert history.get_edited_object() == survivor
    assert history.get_admin_url() == f"/admin/rollouts/rollout/{rollout.pk}/change/"

    client.force_login(user)  # staff with nothing but the permission granted before the move
    page = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")
    assert page.status_code == 200 and "90% v1 / 10% v2" in page.content.decode()
    assert "paused it before the move" in client.get(f"/admin/rollouts/rollout/{rollout.pk}/history/").content.decode()

    # The table kept its name, so serving/migrations/0003's append-only trigger still guards the decision log.
    with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM serving_rolloutevent WHERE rollout_id = %s", [rollout.pk])
    assert survivor.events.count() == 2
