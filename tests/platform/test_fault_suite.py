"""The fault suite (issue 20): the platform as deployed, broken on purpose under steady load, and what it must keep.

One platform per module: gunicorn with the ASGI front and two workers (platform/gunicorn.conf.py), a real Celery
worker and beat, all on this module's own Postgres and Redis (tests/platform/instances.py: spare ports, temporary
directories), so breaking them breaks nothing else. A bounded client (tests/platform/load.py) sends a few hundred
predictions a second, each with its own request id, and every case checks its answers against the prediction log.
Each case is one function that leaves the platform healthy (its /readyz "ok" again) for the next; the last one,
gunicorn's SIGTERM, stops it. Each records one line of the fault table, printed at the end of the run
(tests/conftest.py) and kept in docs/reliability.md.

A new case: a function taking `platform` and `fault_row`, that breaks something under `platform.load(tag)`, waits
for recovery with `platform.recovered_after(...)`, checks the log with `platform.logged(...)`, and calls
`fault_row(...)`. The Celery cases are elsewhere, on their own worker and beat: a rollout with both SIGKILLed
mid-stage in tests/rollouts/test_with_celery.py; a batch job with both SIGKILLed mid-chunk belongs beside the batch
jobs' own Celery tests (issue 17).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from registry import services as registry
from serving.keys import api_key_create
from serving.tokens import user_token_create
from tests.platform.instances import PostgresServer, RedisServer, own_postgres, own_redis, start_web
from tests.platform.load import Load
from tests.platform.processes import free_port, request, stop, wait_for
from tests.rollouts.conftest import Celery

# One xdist worker runs the whole module (`make test` distributes by file, --dist loadfile): the platform starts once,
# and gunicorn's SIGTERM, which stops it, is the module's last case.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

PREDICT = "/api/v1/models/cancer/predict"
RATE = 200  # requests/s in total, from 8 client threads
LOAD_SECONDS = 1.0  # of load before and after each fault
HANG_SECONDS = 15  # the figure
PROBE_TIMEOUT = 3.0  # the readiness probe's timeoutSeconds (platform/k8s/base/web-deployment.yaml)
GRACE_SECONDS = 30  # gunicorn's graceful_timeout (platform/gunicorn.conf.py), Kubernetes' default grace period
LOG_WAIT_SECONDS = 15  # for the buffered rows to reach Postgres once it is back


def _headers(credential: str) -> dict[str, str]:
    return {"Authorization": credential, "Content-Type": "application/json"}


@dataclass
class Platform:
    pg: PostgresServer
    redis: RedisServer
    web: subprocess.Popen
    port: int
    celery: Celery
    database: str
    key: str  # predict:cancer
    victim: str  # predict:cancer, revoked by the Redis case
    victim_pk: int
    admin: str  # an admin's token: revokes keys
    body: bytes
    readiness: list[tuple[float, int, str, float]] = field(default_factory=list)  # (at, http status, status, took)

    def load(self, tag: str, *, body: bytes | None = None, rate: float = RATE, **kwargs) -> Load:
        return Load(self.port, PREDICT, body or self.body, _headers(f"Api-Key {self.key}"), tag=tag, rate=rate,
                    **kwargs)  # fmt: skip

    def predict(self, key: str) -> tuple[int, str]:
        status, headers, _ = request(self.port, "POST", PREDICT, self.body, _headers(f"Api-Key {key}"))
        return status, {k.lower(): v for k, v in headers.items()}.get("x-request-id", "")

    def ready(self) -> tuple[int, dict]:
        started = time.monotonic()
        status, _, content = request(self.port, "GET", "/readyz")
        answer = json.loads(content)
        self.readiness.append((started, status, answer.get("status", ""), time.monotonic() - started))
        return status, answer

    @contextlib.contextmanager
    def probing(self) -> Iterator[list[tuple[float, int, str, float]]]:
        """/readyz every 0.25 s, as a load balancer would, on its own thread; yields what it answered."""
        self.readiness = []
        done = threading.Event()

        def probe() -> None:
            while not done.wait(0.25):
                try:
                    self.ready()
                except OSError:
                    self.readiness.append((time.monotonic(), 0, "no answer", PROBE_TIMEOUT))

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        try:
            yield self.readiness
        finally:
            done.set()
            thread.join(PROBE_TIMEOUT + 2)

    def recovered_after(self, since: float, timeout: float = 30) -> float:
        """Seconds from `since` until /readyz answers "ok" (every check: database, cache, models, routes)."""
        wait_for(lambda: self.ready()[1]["status"] == "ok", timeout, "/readyz ok again")
        return time.monotonic() - since

    def logged(self, tag: str) -> set[str]:
        sql = f"SELECT request_id FROM serving_predictionlog WHERE request_id LIKE '{tag}-%'"  # noqa: S608 - our tags
        result = self.pg.psql(self.database, sql)
        result.check_returncode()
        return set(result.stdout.split())

    def wait_logged(self, tag: str, expected: set[str]) -> set[str]:
        """The logged ids of this tag, once they include `expected` (or after LOG_WAIT_SECONDS)."""
        deadline = time.monotonic() + LOG_WAIT_SECONDS
        found = self.logged(tag)
        while not expected <= found and time.monotonic() < deadline:
            time.sleep(0.25)
            found = self.logged(tag)
        return found

    def assert_celery_alive(self) -> None:
        assert self.celery.worker.poll() is None, "the Celery worker died"
        assert self.celery.beat.poll() is None, "Celery beat died"


@pytest.fixture(scope="module")
def platform(django_db_setup, django_db_blocker, logreg, tmp_path_factory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("faults")
    artifacts = tmp / "artifacts"
    storages = {"artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                              "OPTIONS": {"location": str(artifacts)}}}  # fmt: skip
    with own_postgres() as pg, own_redis() as redis_server, django_db_blocker.unblock():
        # Seeded in the pytest database (this module's tests flush it afterwards), then copied to our own server.
        with override_settings(STORAGES={**_settings_storages(), **storages}):
            model = registry.registered_model_create(name="cancer", task="classification", gate_rules=[])
            version = registry.model_version_register(
                model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
            )
            registry.alias_create(model=model, name="production", version=version)
        key = api_key_create(name="load", scopes=["predict:cancer"])[1]
        victim, victim_raw = api_key_create(name="victim", scopes=["predict:cancer"])
        admin = get_user_model().objects.create_superuser(username="ops", password="correct horse battery staple")
        token = user_token_create(user=admin)[1]
        database = "faults"
        url = pg.copy_of_test_database(database)
        row = {k: float(v) for k, v in logreg.X_test.head(1).to_dict(orient="records")[0].items()}
        logs: list = []
        port = free_port()
        env = {"WEB_CONCURRENCY": "2", "GUNICORN_GRACEFUL_TIMEOUT": str(GRACE_SECONDS)}
        web = start_web(port, tmp / "web", artifacts, logs, database_url=url, redis_url=redis_server.url, env=env)
        celery = Celery({**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_server.url, "DEBUG": "1",
                         "ARTIFACT_ROOT": str(artifacts), "MODELWORKS_VAR_DIR": str(tmp / "celery")}, tmp)  # fmt: skip
        try:
            celery.start_worker()
            celery.start_beat()
            wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
            platform = Platform(pg, redis_server, web, port, celery, database, key, victim_raw, victim.pk,
                                f"Token {token}", json.dumps({"instances": [row]}).encode())  # fmt: skip
            wait_for(lambda: platform.predict(key)[0] == 200, 30, "a first prediction")
            platform.recovered_after(time.monotonic())
            yield platform
        finally:
            stopping = threading.Thread(target=celery.stop)  # the warm shutdowns overlap
            stopping.start()
            stop(web, True)
            stopping.join()
            for log in logs:
                log.close()


def _settings_storages() -> dict:
    from django.conf import settings

    return settings.STORAGES


def _workers(platform: Platform, key: str, *, want: int = 2, tries: int = 200) -> dict[str, int]:
    """Send `key`'s predictions on fresh connections until `want` distinct workers answered (by the process prefix
    of the request ids they make up: serving/services.py new_request_id); their statuses, by worker."""
    seen: dict[str, int] = {}
    for _ in range(tries):
        status, rid = platform.predict(key)
        if rid:
            seen[rid[:-16]] = status
        if len(seen) >= want:
            break
    return seen


def _refused_by_every_worker(platform: Platform, victim: str, tries: int = 200) -> dict[str, int]:
    """On each of fresh connections, the victim key's request then the good key's (the same connection: the same
    worker, which the good answer's request id names): the victim's status per worker, until both were seen."""
    import http.client

    refused: dict[str, int] = {}
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=10)
        try:
            conn.request("POST", PREDICT, platform.body, _headers(f"Api-Key {victim}"))
            victim_status = conn.getresponse()
            victim_status.read()
            conn.request("POST", PREDICT, platform.body, _headers(f"Api-Key {platform.key}"))
            good = conn.getresponse()
            good.read()
            if victim_status.will_close:
                continue  # the good request went to a new connection, perhaps another worker
            worker = (good.getheader("X-Request-ID") or "")[:-16]
            refused[worker] = max(refused.get(worker, 0), victim_status.status)
        finally:
            conn.close()
        if len(refused) >= 2:
            break
    return refused


def _nothing_lost(platform: Platform, load: Load, tag: str) -> tuple[int, int]:
    assert not load.retried(), f"connections closed under a request: {load.retried()[:3]}"
    answered = load.answered()
    found = platform.wait_logged(tag, answered)
    missing = answered - found
    assert not missing, f"{len(missing)} of {len(answered)} answered requests not logged, e.g. {sorted(missing)[:3]}"
    return len(answered), len(found & answered)


def test_redis_killed_and_restarted(platform, fault_row):
    assert set(_workers(platform, platform.victim).values()) == {200}  # the victim key is in both workers' memory
    with platform.load("redis") as load:
        time.sleep(LOAD_SECONDS)
        platform.redis.stop()
        down = time.monotonic()
        time.sleep(0.5)
        revoked = request(platform.port, "POST", f"/api/v1/api-keys/{platform.victim_pk}/revoke/", b"",
                          {"Authorization": platform.admin})[0]  # fmt: skip
        during = platform.predict(platform.key)[0]  # a key still authenticates
        time.sleep(1.5)
        platform.redis.start()
        up = time.monotonic()
        recovery = platform.recovered_after(up)
        time.sleep(LOAD_SECONDS)
    assert revoked == 200
    assert during == 200
    refused = _refused_by_every_worker(platform, platform.victim)
    assert len(refused) == 2 and set(refused.values()) <= {401, 403}, refused  # the revocation holds everywhere
    failed = load.failed()
    expected, found = _nothing_lost(platform, load, "redis")
    rate = len(load.between(down, up)) / (up - down)
    fault_row(f"Redis killed {up - down:.1f} s ({rate:.0f} req/s while down)", len(load.sent), len(failed), expected,
              found, recovery)  # fmt: skip
    assert not failed, f"{len(failed)} non-2xx, e.g. {failed[:3]} (Redis down at {down:.1f})"
    during = load.between(down, up)
    slowest = max(s.done - s.sent for s in during)
    # the client kept sending: answers kept coming, at the rate sent
    assert len(during) >= RATE * (up - down) * 0.5, f"{len(during) / (up - down):.0f} req/s, slowest {slowest:.2f} s"
    platform.assert_celery_alive()


def test_postgres_restarted(platform, fault_row):
    with platform.probing() as probes, platform.load("pg") as load:
        time.sleep(LOAD_SECONDS)
        stopping = time.monotonic()
        platform.pg.stop()
        down = time.monotonic()
        time.sleep(3)
        starting = time.monotonic()
        platform.pg.start()
        up = time.monotonic()
        recovery = platform.recovered_after(up)
        time.sleep(LOAD_SECONDS)
    failed = load.failed()
    expected, found = _nothing_lost(platform, load, "pg")
    rate = len(load.between(down, starting)) / (starting - down)
    fault_row(f"Postgres stopped 3 s, restarted ({rate:.0f} req/s)", len(load.sent), len(failed), expected, found,
              recovery)  # fmt: skip
    before = [p for p in probes if p[0] + p[3] < stopping]
    while_down = [p for p in probes if down < p[0] and p[0] + p[3] < starting]
    assert before and {p[2] for p in before} == {"ok"}, before
    assert while_down and "ok" not in {p[2] for p in while_down}, while_down  # red...
    assert platform.ready()[1]["status"] == "ok"  # ...then green
    late = [s for s in failed if not stopping <= s.sent <= up + recovery]
    assert not late, f"non-2xx outside the outage: {late[:3]}"
    assert {s.status for s in failed} <= {503}, {s.status for s in failed}  # never a 500
    platform.assert_celery_alive()


def test_redis_and_postgres_hung(platform, fault_row):
    with platform.probing() as probes, platform.load("hung") as load:
        time.sleep(LOAD_SECONDS)
        hung_from = time.monotonic()
        platform.redis.pause()
        platform.pg.pause()
        try:
            time.sleep(HANG_SECONDS)
        finally:
            platform.pg.resume()
            platform.redis.resume()
        hung_to = time.monotonic()
        recovery = platform.recovered_after(hung_to)
        time.sleep(LOAD_SECONDS)
    failed = load.failed()
    expected, found = _nothing_lost(platform, load, "hung")
    rate = len(load.between(hung_from, hung_to)) / (hung_to - hung_from)
    fault_row(f"Redis and Postgres hung {HANG_SECONDS} s ({rate:.0f} req/s)", len(load.sent), len(failed), expected,
              found, recovery)  # fmt: skip
    assert not failed, f"{len(failed)} non-2xx, e.g. {failed[:3]}"
    during = load.between(hung_from, hung_to)
    assert len(during) >= RATE * HANG_SECONDS * 0.5, len(during)  # answered from memory, at the rate sent
    slowest = max(s.done - s.sent for s in during)
    assert slowest < 2.0, f"a prediction waited {slowest:.1f} s of the hang"
    probed = [p for p in probes if hung_from < p[0] < hung_to]
    assert probed and max(p[3] for p in probed) < PROBE_TIMEOUT, probed
    assert {p[1] for p in probed} == {200}  # routes from memory: degraded, still ready
    platform.assert_celery_alive()


def test_a_poison_request_in_the_stream(platform, fault_row):
    # A row this database refuses for its content, which validation does not know about: the log's write finds out.
    platform.pg.psql(platform.database, "ALTER TABLE serving_predictionlog ADD CONSTRAINT fault_poison "
                                        "CHECK (routing_key <> 'poison') NOT VALID").check_returncode()  # fmt: skip
    poison = json.dumps({"instances": json.loads(platform.body)["instances"], "key": "poison"}).encode()
    try:
        with platform.load("poison") as load:
            time.sleep(LOAD_SECONDS)
            status = request(platform.port, "POST", PREDICT, poison,
                             {**_headers(f"Api-Key {platform.key}"), "X-Request-ID": "poison-one"})[0]  # fmt: skip
            time.sleep(LOAD_SECONDS)
        answered = load.answered()
        found = platform.wait_logged("poison", answered)
        letters = platform.pg.psql(platform.database, "SELECT count(*) FROM serving_deadletter "
                                                      "WHERE payload LIKE '%poison-one%'").stdout  # fmt: skip
    finally:
        platform.pg.psql(platform.database, "ALTER TABLE serving_predictionlog DROP CONSTRAINT fault_poison")
    failed = load.failed()
    fault_row("one poison request (a row the database refuses)", len(load.sent) + 1, len(failed), len(answered),
              len(found & answered), 0.0)  # fmt: skip
    assert status == 200  # the request is answered; its row cannot be stored
    assert answered - found == set(), f"{len(answered - found)} of {len(answered)} other requests not logged"
    assert "poison-one" not in found and int(letters) == 1  # it is the one dead letter
    assert not failed and not load.retried()


def test_gunicorn_sigterm_under_load_drains(platform, fault_row):
    """Last: it stops the web process. In-flight requests finish and every answered request is logged by the time the
    master exits (the workers' micro-batches and log buffers drained), within the grace period. Beside the steady
    load, requests of 200 rows each (tens of milliseconds apiece) keep a few requests in flight at the signal."""
    rows = json.loads(platform.body)["instances"] * 200
    big = json.dumps({"instances": rows}).encode()
    with platform.load("drain", timeout=GRACE_SECONDS) as load, \
            platform.load("drain-big", body=big, rate=10, threads=2, timeout=GRACE_SECONDS) as heavy:  # fmt: skip
        time.sleep(2 * LOAD_SECONDS)
        os.kill(platform.web.pid, signal.SIGTERM)
        signalled = time.monotonic()
        platform.web.wait(timeout=GRACE_SECONDS + 5)
        drained = time.monotonic() - signalled
        time.sleep(0.2)
    sent = load.sent + heavy.sent
    before = [s for s in sent if s.sent < signalled]
    # A request on a kept-alive connection that a shutting-down worker closed before reading it (any server's race)
    # was sent once more by the client: answered, or refused by then. Not counted as cut; every one answered by the
    # server, though, must be answered and logged.
    cut = [s for s in before if not s.ok and not s.retried]
    in_flight = sum(s.sent < signalled < s.done for s in before)
    answered = load.answered() | heavy.answered()
    found = platform.logged("drain")  # no waiting: the master has exited, so what is not there is lost
    fault_row(f"gunicorn master SIGTERM under load ({in_flight} in flight)", len(sent), len(sent) - len(answered),
              len(answered), len(found & answered), drained)  # fmt: skip
    assert not cut, f"{len(cut)} of {len(before)} requests sent before SIGTERM not answered, e.g. {cut[:3]}"
    assert answered - found == set(), f"{len(answered - found)} of {len(answered)} answered requests not logged"
    assert drained < GRACE_SECONDS
    assert not [s for s in sent if s.sent > signalled + 1 and s.ok]  # it did stop
