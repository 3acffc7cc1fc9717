"""Beat's schedule: a period of an hour or more is a crontab, so a beat restart (its state file is on an emptyDir)
does not push the next run a whole period back; shorter ticks stay intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import crontab, schedule
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given
from hypothesis import strategies as st

from config.celery import app
from config.schedules import HOUR_S, every

RESTART = datetime(2026, 3, 1, 10, 50, tzinfo=UTC)  # beat restarts ten minutes before the top of the hour


def _period_s(entry: dict) -> float | None:
    """The interval of an interval entry in seconds; None for a crontab."""
    value = entry["schedule"]
    if isinstance(value, crontab):
        return None
    if isinstance(value, schedule):
        return value.run_every.total_seconds()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def test_every_entry_of_an_hour_or_more_is_a_crontab_and_the_ticks_stay_intervals():
    entries = app.conf.beat_schedule
    for name, entry in entries.items():
        period = _period_s(entry)
        assert period is None or period < HOUR_S, f"{name}: an interval of {period} s restarts with beat"
    verify = entries["registry-verify-artifacts"]["schedule"]
    assert isinstance(verify, crontab) and verify == crontab(minute=0, hour="*")
    assert _period_s(entries["rollouts-rollout-tick"]) == 5
    assert _period_s(entries["monitoring-run-due-monitors"]) == 60
    assert _period_s(entries["monitoring-join-feedback"]) == 300
    assert _period_s(entries["features-materialize"]) == 300


def test_after_a_restart_the_hourly_sweep_runs_at_the_next_hour_not_an_hour_later():
    # A restarted beat has no state: it takes the restart as the last run. The crontab still fires at 11:00; the
    # interval it replaces would have waited until 11:50.
    hourly = app.conf.beat_schedule["registry-verify-artifacts"]["schedule"]
    hourly = crontab(minute=hourly.minute, hour=hourly.hour, nowfun=lambda: RESTART)
    assert hourly.remaining_estimate(RESTART) == timedelta(minutes=10)
    interval = schedule(timedelta(seconds=HOUR_S), nowfun=lambda: RESTART)
    assert interval.remaining_estimate(RESTART) == timedelta(hours=1)


@given(hours=st.sampled_from([1, 2, 3, 4, 6, 8, 12, 24]), minute=st.integers(0, 59))
def test_a_period_dividing_the_day_becomes_the_crontab_with_that_period(hours, minute):
    cron = every(hours * HOUR_S, name="X", minute=minute)
    assert isinstance(cron, crontab)
    fires = sorted(cron.hour)
    assert fires == list(range(0, 24, hours)) and cron.minute == {minute}


@given(seconds=st.floats(min_value=0.001, max_value=HOUR_S - 0.001))
def test_a_period_below_an_hour_stays_an_interval(seconds):
    assert every(seconds, name="X") == seconds


@pytest.mark.parametrize("seconds", [0, -5, 5400, 7 * 3600, 2 * 24 * 3600])
def test_a_period_no_crontab_keeps_is_refused_naming_the_variable(seconds):
    with pytest.raises(ImproperlyConfigured, match=r"^X="):
        every(seconds, name="X")
