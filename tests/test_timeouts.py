"""Every dependency call has a timeout: what each kind of process gets from config/settings.py, on real connections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import django, json; django.setup(); from django.conf import settings as s; from django.db import connection; "
    "c = connection.cursor(); c.execute('SHOW statement_timeout'); st = c.fetchone()[0]; "
    "c.execute('SHOW lock_timeout'); lt = c.fetchone()[0]; "
    "print(json.dumps([s.MODELWORKS_PROCESS, st, lt, s.DATABASES['default']['OPTIONS']['connect_timeout'], "
    "s.CACHES['default']['OPTIONS']]))"
)


def probe(prelude: str = "", **env: str) -> list:
    environment = {k: v for k, v in os.environ.items() if k != "MODELWORKS_PROCESS"}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL=_database_url(), **env)
    result = subprocess.run([sys.executable, "-c", prelude + PROBE], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/postgres"


@pytest.mark.parametrize("prelude,env", [("import gunicorn; ", {}), ("", {"MODELWORKS_PROCESS": "web"})],
                         ids=["started-by-gunicorn", "told-by-env"])  # fmt: skip
def test_a_web_process_bounds_every_statement_lock_wait_and_redis_call(prelude, env):
    kind, statement, lock, connect, redis_options = probe(prelude, **env)
    assert kind == "web"
    assert (statement, lock, connect) == ("30s", "3s", 3)
    assert redis_options == {"socket_timeout": 0.1, "socket_connect_timeout": 0.25}


def test_workers_and_commands_keep_long_statements_but_still_connect_with_a_timeout():
    kind, statement, lock, connect, redis_options = probe()  # as celery, migrate or a management command
    assert kind == "other"
    assert (statement, lock, connect) == ("0", "0", 3)  # the server's defaults: no limit
    assert redis_options == {"socket_timeout": 5.0, "socket_connect_timeout": 0.25}


@pytest.mark.django_db
def test_long_statements_lift_the_web_bound_for_their_transaction_only(settings):
    from django.db import OperationalError, connection, transaction

    from config.db import long_statements

    settings.MODELWORKS_PROCESS = "web"
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 20")
    with long_statements(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.1)")
    with pytest.raises(OperationalError, match="statement timeout"), transaction.atomic(), connection.cursor() as c:
        c.execute("SELECT pg_sleep(0.1)")
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")  # the test's own transaction ends with constraint checks


def test_a_web_process_connection_notices_a_vanished_database_within_seconds():
    """Server-side timeouts cannot fire when the server is gone (a partition, a failover): the web process's own
    connection has TCP keepalives and a user timeout, so a read on it fails in seconds, not the kernel's ~15 min."""
    snippet = ("import gunicorn, django, json; django.setup(); from django.db import connection; connection.cursor(); "
               "print(json.dumps(connection.connection.info.dsn_parameters))")  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "MODELWORKS_PROCESS"}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", DATABASE_URL=_database_url())
    result = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, env=environment, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    dsn = json.loads(result.stdout)
    assert (dsn["keepalives"], dsn["keepalives_idle"], dsn["keepalives_count"]) == ("1", "10", "3")
    assert dsn["tcp_user_timeout"] == "15000"
