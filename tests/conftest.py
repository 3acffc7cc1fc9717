"""Shared fixtures. The suite runs against the real Postgres and Redis that `make test` provides."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import pytest
import skops.io as sio
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from rest_framework.test import APIClient
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry import services
from registry.permissions import DATA_SCIENTIST, DEPLOYER, ensure_roles
from serving.tokens import user_token_create


def pytest_configure(config: pytest.Config) -> None:
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.exit("the suite needs PostgreSQL: run it with `make test` (it sets DATABASE_URL)", returncode=2)
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.exit("the suite needs Redis: run it with `make test` (it sets REDIS_URL)", returncode=2)
    # The test database's partitioned log starts with today's partition and the default one only: every partition
    # adds to the TRUNCATE each transactional test's teardown runs (tests/serving/test_partitioned_log.py).
    settings.MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS = 0


REDIS_DATABASES = 16  # Redis's default `databases`


def worker_redis_url(url: str, worker: int) -> str:
    """REDIS_URL for xdist worker `worker`: the same server, database (base + worker) mod 16 (db 15 and 0 for
    `make test`'s db 15 on two workers)."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base + worker) % REDIS_DATABASES}"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list) -> None:
    """Each xdist worker gets its own Redis database, set in the worker's environment before it starts (so before
    pytest-django loads the settings there). Tests flush their database and start Celery workers on it as a broker:
    two pytest workers on one database would flush each other's queues and take each other's tasks. Everything a
    test starts inherits the environment or reads settings.REDIS_URL. (pytest-django gives each worker its own test
    database, test_<name>_gw<N>.) The environment is set from here, in the controller, because a `-p` plugin under
    tests/ is not importable before the conftests are: workers get the controller's sys.path."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    for spec in specs:
        spec.env["REDIS_URL"] = worker_redis_url(url, int(spec.id.removeprefix("gw")))


@pytest.fixture(scope="session", autouse=True)
def empty_redis():
    """The suite owns its Redis database (REDIS_URL in `make test` points at db 15; each xdist worker has its own,
    pytest_xdist_setupnodes above): start it empty."""
    import redis

    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(scope="session", autouse=True)
def credential_reads_let_go(django_db_setup):
    """The credential reads' thread keeps its connection between reads (serving/key_cache.py): closed at the end,
    or the test database cannot be dropped."""
    yield
    from serving.key_cache import credential_reads

    credential_reads.close_connections()


@pytest.fixture(autouse=True)
def artifact_root(settings, tmp_path):
    """Each test stores artifacts in its own folder of real local-disk storage.

    Static files are served unhashed: the hashed manifest only exists after `collectstatic`, which `make run` does.
    """
    root = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


@pytest.fixture(autouse=True)
def fresh_local_prediction_cache():
    """Each test starts with an empty in-process level of the prediction cache: entries are keyed by version number
    and artifact hash, and many tests register the same artifact as `cancer` v1 (an answer cached by an earlier test
    would be a hit, computed in another batch, equal only to the last bit)."""
    from serving import prediction_cache

    prediction_cache.local().clear()
    yield


@pytest.fixture(autouse=True)
def fresh_ood_scorers():
    """Each test reads OOD profiles afresh: this process's scorers are held by version id, and a flushed test
    database gives ids out again."""
    from monitoring import ood

    ood.forget()
    yield
    ood.forget()


@pytest.fixture(autouse=True)
def webhook_receivers_on_localhost(settings):
    """Webhooks may not go to loopback by default; the suite's receivers listen on 127.0.0.1, allowed explicitly."""
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


@dataclass(frozen=True)
class Trained:
    """A fitted estimator with its artifact and held-out evaluation data."""

    estimator: object
    artifact: bytes
    X_test: pd.DataFrame
    y_test: pd.Series

    @property
    def eval_csv(self) -> bytes:
        return self.X_test.assign(target=self.y_test).to_csv(index=False).encode()


def _train(loader, estimator) -> Trained:
    X, y = loader(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    estimator.fit(X_train, y_train)
    return Trained(estimator, sio.dumps(estimator), X_test, y_test)


@pytest.fixture(scope="session")
def logreg() -> Trained:
    return _train(datasets.load_breast_cancer, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))


@pytest.fixture(scope="session")
def forest() -> Trained:
    return _train(datasets.load_breast_cancer, RandomForestClassifier(n_estimators=10, random_state=0))


@pytest.fixture(scope="session")
def ridge() -> Trained:
    return _train(datasets.load_diabetes, Ridge(alpha=0.1))


@pytest.fixture
def user(django_user_model):
    """An ML engineer: registers, experiments, deploys (the data scientist and deployer roles), not an admin."""
    ada = django_user_model.objects.create_user(username="ada", password="correct horse battery staple")
    ensure_roles()
    ada.groups.add(*Group.objects.filter(name__in=[DATA_SCIENTIST, DEPLOYER]))
    return ada


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser(username="grace", password="correct horse battery staple")


@pytest.fixture
def api(user) -> APIClient:
    """An API client authenticating with a real token, as an ML engineer's script would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=user)[1]}")
    return client


@pytest.fixture
def classifier_model(db):
    return services.registered_model_create(
        name="cancer", task="classification", gate_rules=["accuracy >= 0.9", "f1 >= production - 0.01"]
    )


@pytest.fixture
def regressor_model(db):
    return services.registered_model_create(name="diabetes", task="regression", gate_rules=["rmse <= 65"])


def upload(data: bytes, name: str = "model.skops"):
    """A file object as the multipart client sends it."""
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def stored_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def db_name() -> str:
    return connection.settings_dict["NAME"]


@pytest.fixture
def fault_row(record_property):
    """Records this test's line of the fault table (issue 20's fault suite), printed at the end of the run."""

    def record(fault: str, requests: int, non_2xx: int, expected: int, found: int, recovery: float) -> None:
        row = {"fault": fault, "requests": requests, "non_2xx": non_2xx, "expected": expected, "found": found,
               "recovery_s": round(recovery, 2)}  # fmt: skip
        record_property("fault_table", row)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault table: one line per fault case that ran (with xdist too: user properties reach the controller)."""
    rows = [
        (report, value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", [])
        if name == "fault_table" and getattr(report, "when", "call") == "call"
    ]
    if not rows:
        return
    terminalreporter.section("fault table (docs/reliability.md)")
    header = f"{'fault':<52} {'requests':>8} {'non-2xx':>8} {'log rows expected/found':>24} {'recovery s':>10}  result"
    terminalreporter.write_line(header)
    for report, row in rows:
        logged = f"{row['expected']}/{row['found']}"
        terminalreporter.write_line(f"{row['fault']:<52} {row['requests']:>8} {row['non_2xx']:>8} {logged:>24} "
                                    f"{row['recovery_s']:>10.2f}  {report.outcome}")  # fmt: skip
