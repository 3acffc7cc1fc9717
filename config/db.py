"""Database helpers shared by the apps.

Web processes run every statement under a short `statement_timeout` (config/settings.py), so that no request thread
waits on the database without end. A few reads in the web process are long by design, and the user asked for them
and waits for them: a drift report over a large window, training data over millions of feature values. Those run
inside `long_statements()`, which lifts the bound for their own transaction only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction


@contextmanager
def long_statements() -> Iterator[None]:
    """A transaction whose statements may run up to DB_LONG_STATEMENT_TIMEOUT_MS, the bound before it restored at
    its end (web processes only: other processes have no statement timeout to lift)."""
    with transaction.atomic():
        if connection.vendor != "postgresql" or settings.MODELWORKS_PROCESS != "web":
            yield
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                [f"{settings.DB_LONG_STATEMENT_TIMEOUT_MS}ms"],
            )
            previous = cursor.fetchone()[0]
        yield
        # Inside an outer transaction the lifted bound would last until that one ends; a failure rolls it back anyway.
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
