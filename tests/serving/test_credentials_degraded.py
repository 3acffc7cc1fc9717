"""Credentials while the database is away or hung: a credential nobody can check now answers 503 with Retry-After
(never 500), counted by the front like any answer; DRF tokens are remembered for key_cache.TOKEN_SECONDS after the
read that verified them, so token callers neither query the database per request nor lose it to a short outage, and
a deleted token or a deactivated user stops working within that time; on the request processor's thread a credential
read is bounded, so a hung database does not stall everybody's predictions."""

from __future__ import annotations

import json
import socket
import time

import pytest
from django.db import connection
from knox.models import AuthToken

from serving import key_cache
from serving.hotpath import check_credential
from serving.key_cache import key_cache as process_key_cache
from serving.keys import api_key_lookup
from serving.tokens import token_digest, user_token_create
from tests.serving.conftest import make_key, post, rows_of
from tests.serving.test_degraded import on_processor_thread, sample
from tests.serving.test_front import call, processor_lets_go_of_the_database  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/models/cancer/predict"


class HungDatabase:
    """A port that takes connections (the kernel's backlog) and never answers: Postgres under SIGSTOP, as a client
    sees it. A connect waits for the connect_timeout, set long here so that any wait on it shows."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._port = connection.settings_dict["PORT"]
        self._options = dict(connection.settings_dict["OPTIONS"])

    def hang(self, connect_timeout: int = 20) -> None:
        connection.close()
        key_cache.credential_reads.close_connections()  # it keeps one between reads: a real hang would hold it too
        connection.settings_dict["PORT"] = str(self._listener.getsockname()[1])
        connection.settings_dict["OPTIONS"]["connect_timeout"] = connect_timeout

    def back(self) -> None:
        self._listener.close()  # the connects still waiting get a reset
        connection.close()
        connection.settings_dict["PORT"] = self._port
        connection.settings_dict["OPTIONS"].clear()
        connection.settings_dict["OPTIONS"].update(self._options)


@pytest.fixture
def hung_database():
    db = HungDatabase()
    try:
        yield db
    finally:
        db.back()


def token_for(user) -> str:
    return user_token_create(user=user)[1]


def via_django(client, headers: dict[str, str], body) -> tuple[int, dict, str | None]:
    response = post(client, URL, body, **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    return response.status_code, response.json(), response.headers.get("Retry-After")


def via_front(client, headers: dict[str, str], body) -> tuple[int, dict, str | None]:
    status, answer_headers, content = call("POST", URL, json.dumps(body).encode(), headers)
    return status, json.loads(content), answer_headers.get("retry-after")


FRONTS = {"django": via_django, "front": via_front}


def answered_503(handler: str = "predict") -> float:
    return sample("modelworks_http_responses_total", handler=handler, code="503")


@pytest.mark.parametrize("front", FRONTS)
def test_an_api_key_never_seen_while_the_database_is_away_answers_503_with_retry_after(
    front, production, logreg, client, database
):
    raw = make_key("predict:cancer")
    counted = answered_503()
    database.away()
    status, payload, retry_after = FRONTS[front](client, {"Authorization": f"Api-Key {raw}"},
                                                 {"instances": rows_of(logreg.X_test, 1)})  # fmt: skip
    assert status == 503, payload
    assert "API key cannot be checked now" in payload["detail"]
    assert retry_after is not None and int(retry_after) >= 1
    if front == "front":
        assert answered_503() == counted + 1  # counted as the front's answer, as any other


@pytest.mark.parametrize("front", FRONTS)
def test_a_verified_token_keeps_working_through_an_outage_for_its_ttl_then_answers_503(
    front, production, logreg, client, user, database, monkeypatch
):
    headers = {"Authorization": f"Token {token_for(user)}"}
    body = {"instances": rows_of(logreg.X_test, 1)}
    assert FRONTS[front](client, headers, body)[0] == 200
    database.away()
    served = FRONTS[front](client, headers, body)
    assert served[0] == 200, served  # the token from memory, the route from the last good one
    monkeypatch.setattr(key_cache, "TOKEN_SECONDS", 0.0)  # its time is up: the database must vouch for it again
    status, payload, retry_after = FRONTS[front](client, headers, body)
    assert status == 503, payload
    assert "token cannot be checked now" in payload["detail"]
    assert retry_after is not None and int(retry_after) >= 1


@pytest.mark.parametrize("front", FRONTS)
def test_a_deleted_token_or_a_deactivated_user_stops_working_within_the_ttl(
    front, production, logreg, client, user, django_user_model, monkeypatch
):
    assert key_cache.TOKEN_SECONDS == 5.0  # the bound the README states
    monkeypatch.setattr(key_cache, "TOKEN_SECONDS", 0.5)
    body = {"instances": rows_of(logreg.X_test, 1)}
    deleted = {"Authorization": f"Token {token_for(user)}"}
    other = django_user_model.objects.create_user(username="bob", password="correct horse battery staple")
    deactivated = {"Authorization": f"Token {token_for(other)}"}
    for headers in (deleted, deactivated):
        assert FRONTS[front](client, headers, body)[0] == 200
    AuthToken.objects.filter(user=user).delete()
    other.is_active = False
    other.save()
    time.sleep(0.6)
    for headers in (deleted, deactivated):
        status, payload, _ = FRONTS[front](client, headers, body)
        assert status == 401, payload


def test_a_token_in_use_is_reread_in_the_background_and_its_deletion_seen(production, logreg, user, monkeypatch):
    """On the processor's thread a token past half its time is re-read off the thread: its callers never wait on
    the database, and a deletion is still seen within the TTL."""
    monkeypatch.setattr(key_cache, "TOKEN_SECONDS", 1.0)
    raw = token_for(user)
    assert on_processor_thread(lambda: check_credential(f"Token {raw}", None, "predict:cancer")) is None
    first = key_cache.token_cache().verified_at(raw)
    time.sleep(0.6)
    assert on_processor_thread(lambda: check_credential(f"Token {raw}", None, "predict:cancer")) is None
    deadline = time.monotonic() + 5
    while key_cache.token_cache().verified_at(raw) == first and time.monotonic() < deadline:
        time.sleep(0.01)
    assert key_cache.token_cache().verified_at(raw) > first  # re-read in the background
    AuthToken.objects.filter(digest=token_digest(raw)).delete()
    time.sleep(1.1)
    denied = on_processor_thread(lambda: check_credential(f"Token {raw}", None, "predict:cancer"))
    assert denied.status == 401


def test_a_hung_database_costs_the_processor_one_bounded_wait_not_the_hang(
    production, user, django_user_model, hung_database
):
    remembered_key = make_key("predict:cancer")
    assert process_key_cache().wait_until_subscribed(5)
    assert api_key_lookup(remembered_key) is not None  # now in memory
    remembered_token = token_for(user)
    assert check_credential(f"Token {remembered_token}", None, "predict:cancer") is None
    other = django_user_model.objects.create_user(username="bob", password="correct horse battery staple")
    new_token, new_key = token_for(other), make_key("predict:cancer")

    hung_database.hang(connect_timeout=20)
    started = time.monotonic()
    answers = on_processor_thread(lambda: [
        check_credential(f"Token {new_token}", None, "predict:cancer"),  # waits COLD_WAIT_SECONDS, then 503
        check_credential(f"Api-Key {new_key}", None, "predict:cancer"),  # not queued behind the hung read: 503
        check_credential(f"Api-Key {remembered_key}", None, "predict:cancer"),  # from memory
        check_credential(f"Token {remembered_token}", None, "predict:cancer"),
    ])  # fmt: skip
    waited = time.monotonic() - started
    assert [a and a.status for a in answers] == [503, 503, None, None]
    assert all(a.headers["Retry-After"] == "1" for a in answers[:2])
    # Not a performance bound: waiting on the hang itself would take the 20 s connect_timeout (or raise after it).
    assert waited < 10, waited


def test_routes_never_read_cost_the_processor_one_wait_not_one_each_while_the_database_hangs(
    production, hung_database, monkeypatch
):
    """Callers may name any alias: while a route read hangs, the next unknown ones answer 503 at once instead of
    holding every prediction of the worker for COLD_WAIT_SECONDS each."""
    from serving import routing

    monkeypatch.setattr(routing, "COLD_WAIT_SECONDS", 1.0)
    hung_database.hang(connect_timeout=20)

    def resolve_each() -> list[tuple[str, float]]:
        answers = []
        for alias in ("a1", "a2", "a3", "a4", "a5"):
            started = time.monotonic()
            with pytest.raises(routing.RouteUnavailable):
                routing.resolve("cancer", alias=alias)
            answers.append((alias, time.monotonic() - started))
        return answers

    waits = dict(on_processor_thread(resolve_each))
    assert waits["a1"] >= 0.9  # the first waits its budget for the hung read
    assert all(waits[a] < 0.5 for a in ("a2", "a3", "a4", "a5")), waits  # the rest are not queued behind it


def test_the_route_cache_stays_bounded_whatever_callers_ask_for(production, monkeypatch):
    from serving import routing

    monkeypatch.setattr(routing, "ROUTE_CACHE_MAX", 40)
    for number in range(100, 200):
        with pytest.raises(routing.RouteError):
            routing.resolve("cancer", version=number)  # 404s, each cached
    assert len(routing._cache) <= 40
    assert routing.resolve("cancer").version.pk == production.pk
