"""Beat schedules from a period in seconds.

Beat keeps when each entry last ran in its state file, which on Kubernetes lives on an emptyDir: a restarted beat has
none, and an interval schedule then counts its whole period from the restart. That is harmless for a tick of seconds
or minutes, but an hourly job would wait another hour after every restart (and never run under frequent restarts).
Periods of an hour or more are therefore crontab schedules on the wall clock (UTC), which a restart does not move.
"""

from __future__ import annotations

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

HOUR_S = 3600
DAY_S = 24 * HOUR_S


def every(seconds: float, *, name: str, minute: int = 0) -> float | crontab:
    """An interval (seconds) below an hour; at or above it, the crontab that fires every `seconds` at `minute`.

    An hour or more must divide a day evenly (1, 2, 3, 4, 6, 8, 12 or 24 hours) so the crontab keeps the period;
    anything else raises ImproperlyConfigured naming the variable `name`.
    """
    if seconds <= 0:
        raise ImproperlyConfigured(f"{name}={seconds!r} must be a positive number of seconds")
    if seconds < HOUR_S:
        return seconds
    if seconds % HOUR_S or DAY_S % seconds:
        raise ImproperlyConfigured(
            f"{name}={seconds!r}: a period of an hour or more must be 1, 2, 3, 4, 6, 8, 12 or 24 hours (in seconds)"
        )
    hours = int(seconds // HOUR_S)
    return crontab(minute=minute, hour="*" if hours == 1 else f"*/{hours}")
