"""The feature store with no Redis (as `make run` starts it when REDIS_URL is unset): the online store is a database
table. Run as an operator would, in subprocesses with no REDIS_URL, against the real Postgres test database."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from tests.test_settings import bare_env, run

YAML = """
entities:
  - {name: store, join_key: store_id, value_type: string}
feature_views:
  - name: sales
    entity: store
    ttl: 2h
    features:
      - {name: revenue, dtype: float}
      - {name: open, dtype: bool}
"""


@pytest.mark.django_db(transaction=True)  # the subprocesses commit; the test database is emptied afterwards
def test_define_ingest_materialize_and_read_without_redis(tmp_path):
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = bare_env(tmp_path, DEBUG="1", DATABASE_URL=database_url)
    (tmp_path / "features.yaml").write_text(YAML)
    (tmp_path / "sales.csv").write_text(
        "store_id,event_timestamp,revenue,open\n"
        "s1,2020-01-01T10:00:00Z,10.5,true\n"
        "s1,2020-01-01T11:00:00Z,12.0,false\n"
        "s2,2020-01-01T09:00:00Z,7.0,\n"
    )
    (tmp_path / "entities.csv").write_text(
        "store_id,event_timestamp\ns1,2020-01-01T10:30:00Z\ns2,2020-01-01T10:00:00Z\ns2,2020-01-01T12:00:00Z\n"
    )
    for command in (
        ["manage.py", "migrate", "-v0"],
        ["manage.py", "apply_features", str(tmp_path / "features.yaml")],
        ["manage.py", "ingest_features", "sales", str(tmp_path / "sales.csv"), "--no-progress"],
        ["manage.py", "materialize", "--start", "2020-01-01T00:00:00Z"],
        ["manage.py", "historical_features", str(tmp_path / "entities.csv"), str(tmp_path / "train.csv"),
         "--features", "sales:revenue,sales:open"],
    ):  # fmt: skip
        result = run(command, env, timeout=300)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "train.csv").read_text().splitlines() == [
        "store_id,event_timestamp,sales:revenue,sales:open",
        "s1,2020-01-01T10:30:00Z,10.5,True",
        "s2,2020-01-01T10:00:00Z,7.0,",
        "s2,2020-01-01T12:00:00Z,,",  # the 09:00 value is more than the 2 h TTL old
    ]
    probe = (
        "from django.conf import settings; from features.online import online_store; "
        "from features.models import FeatureView; import json; "
        "view = FeatureView.objects.get(name='sales'); "
        "print(json.dumps([settings.MODELWORKS_FEATURES_ONLINE_STORE, online_store().count(view), "
        "online_store().read([(view, ['s1'])])[0][0].data]))"
    )
    result = run(["manage.py", "shell", "-c", probe], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["database", 2, {"revenue": 12.0, "open": False}]
