"""The request processor renews a route in use before it ages out, in the background, so no round of requests waits
for the database to re-read it (issue 18: that wait, once per TTL, was most of the p99 at concurrency 8)."""

from __future__ import annotations

import time

import pytest

from registry import services as registry
from serving import routing
from tests.serving.test_degraded import on_processor_thread

pytestmark = pytest.mark.django_db(transaction=True)
TTL_MS = 60_000  # long: the test ages the remembered routes itself
DEFAULT_ROUTE = ("default", "cancer")


def age_routes(seconds: float) -> None:
    """Make every remembered route `seconds` older, as if that much time had passed since its read."""
    for entry in routing._cache.values():
        entry.loaded_at -= seconds


def eventually(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.02)


def test_a_promotion_is_followed_by_a_renewal_made_while_the_old_route_still_serves(
    production, classifier_model, logreg, settings
):  # fmt: skip
    settings.MODELWORKS_ROUTE_TTL_MS = TTL_MS
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    v2 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_move(model=classifier_model, name="production", version=v2)

    # Fresh and not yet due: served from memory, no read started.
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    assert routing._reads.running_since(time.monotonic() + 1) == set()

    # Past half its TTL: this request is still answered with the route it has (never older than the TTL), and the
    # re-read goes on behind it; the requests after it follow the promotion.
    age_routes(0.6 * TTL_MS / 1000)
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    eventually(lambda: on_processor_thread(lambda: routing.resolve("cancer")).version.pk == v2.pk,
               "the renewed route serves the promoted version")  # fmt: skip
    assert time.monotonic() - routing._cache[DEFAULT_ROUTE].loaded_at < TTL_MS / 2000  # renewed, not aged out


def test_a_renewal_the_database_cannot_answer_leaves_the_route_serving(production, database, settings):
    settings.MODELWORKS_ROUTE_TTL_MS = TTL_MS
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    database.away()
    age_routes(0.6 * TTL_MS / 1000)
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    eventually(lambda: routing._cache[DEFAULT_ROUTE].failed_at is not None, "the renewal's read failed")
    # Until the route ages out, it serves as it is, and the failed read is not started again on every request.
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    assert routing._reads.running_since(time.monotonic() + 1) == set()
    database.back()
