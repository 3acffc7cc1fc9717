"""The console's traffic figures come from a per-minute rollup of the prediction log, kept by beat: what it shows
must be what the log holds, minute by minute, including rows that landed after their minute was first counted and
the current minute the rollup has not reached."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.celery import app
from monitoring.models import TrafficMinute
from monitoring.traffic import traffic_per_minute, traffic_rollup
from serving.models import Outcome, PredictionLog

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 12, 3, 12, 30, 20, tzinfo=UTC)


def _log(rows: list[tuple[str, int, float, bool]]) -> None:
    """(model, version, seconds before NOW, failed) per row."""
    PredictionLog.objects.bulk_create(
        PredictionLog(
            request_id=f"r{i}", model_name=model, version=version, inputs=[], outputs={}, latency_ms=1.0,
            route_reason="alias:production", outcome=Outcome.ERROR if failed else Outcome.OK,
            created_at=NOW - timedelta(seconds=ago),
        )
        for i, (model, version, ago, failed) in enumerate(rows)
    )  # fmt: skip


def _brute_force(since: datetime) -> Counter:
    counts: Counter = Counter()
    for row in PredictionLog.objects.filter(created_at__gte=since, created_at__lte=NOW):
        minute = row.created_at.replace(second=0, microsecond=0)
        counts[(row.model_name, row.version, minute, "requests")] += 1
        counts[(row.model_name, row.version, minute, "errors")] += row.outcome != Outcome.OK
    return +counts


def _shown(since: datetime) -> Counter:
    counts: Counter = Counter()
    for name, versions in traffic_per_minute(["a", "b"], since=since, now=NOW).items():
        for version, minutes in versions.items():
            for minute, (requests, errors) in minutes.items():
                counts[(name, version, minute, "requests")] += requests
                counts[(name, version, minute, "errors")] += errors
    return +counts


rows = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 3), st.floats(0, 40 * 60), st.booleans()), max_size=60
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=rows, after=rows, rolled_at_ago=st.integers(0, 30 * 60))
def test_what_the_console_counts_is_what_the_log_holds(before, after, rolled_at_ago):
    PredictionLog.objects.all().delete()
    TrafficMinute.objects.all().delete()
    _log(before)
    traffic_rollup(now=NOW - timedelta(seconds=rolled_at_ago), minutes=60)
    # rows that land after the rollup ran, in minutes it has already counted or not yet reached
    PredictionLog.objects.bulk_create(
        PredictionLog(
            request_id=f"late{i}",
            model_name=m,
            version=v,
            inputs=[],
            outputs={},
            latency_ms=1.0,
            route_reason="alias:production",
            outcome=Outcome.ERROR if f else Outcome.OK,
            created_at=NOW - timedelta(seconds=min(ago, rolled_at_ago)),
        )  # fmt: skip
        for i, (m, v, ago, f) in enumerate(after)
    )
    traffic_rollup(now=NOW, minutes=60)  # beat's next run recounts its window
    since = (NOW - timedelta(minutes=45)).replace(second=0, microsecond=0)
    assert _shown(since) == _brute_force(since)


def test_the_minutes_the_rollup_has_not_reached_are_read_from_the_log():
    _log([("a", 1, 5, False), ("a", 1, 6, True), ("a", 2, 40, False)])  # this minute and the one before
    traffic_rollup(now=NOW - timedelta(minutes=5))  # beat last ran five minutes ago
    assert TrafficMinute.objects.count() == 0
    shown = traffic_per_minute(["a"], since=NOW - timedelta(hours=1), now=NOW)["a"]
    this_minute = NOW.replace(second=0)
    assert shown[1] == {this_minute: (2, 1)}
    assert shown[2] == {this_minute - timedelta(minutes=1): (1, 0)}


def test_a_rerun_replaces_its_window_and_leaves_older_minutes_alone():
    _log([("a", 1, 30 * 60, False), ("a", 1, 65, False)])
    assert traffic_rollup(now=NOW, minutes=60) == 2
    assert traffic_rollup(now=NOW, minutes=60) == 2  # the same figures, not doubled
    PredictionLog.objects.filter(created_at__lt=NOW - timedelta(minutes=20)).delete()  # pruned, say
    traffic_rollup(now=NOW)  # the default window (15 minutes) does not reach the pruned minute
    assert sorted(TrafficMinute.objects.values_list("requests", flat=True)) == [1, 1]


def test_beat_rolls_up_every_minute_and_the_command_widens_the_window(capsys):
    entry = app.conf.beat_schedule["monitoring-rollup-traffic"]
    assert entry["task"] == "monitoring.rollup_traffic" and entry["schedule"] == 60  # seconds
    _log([("b", 1, 3 * 3600, False)])
    call_command("rollup_traffic", "--minutes", str(4 * 60))
    assert "model-version-minutes counted over the last 240 minutes" in capsys.readouterr().out
    with pytest.raises(Exception, match="--minutes must be between 1 and 44640"):
        call_command("rollup_traffic", "--minutes", "0")
