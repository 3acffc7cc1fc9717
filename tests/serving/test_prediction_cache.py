"""The two-level prediction cache (serving/prediction_cache.py): answers equal to the uncached ones under concurrency
(the request processor's rounds and Django's threads at once), one MGET per round, and Redis away or hung turning
hits into misses with no error. Redis is the suite's own, or the test's own server (tests/platform/instances.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from registry import services as registry
from serving import prediction_cache
from serving.front import Pending, answer_round, request_processor
from serving.hotpath import predict_steps
from serving.services import predict
from tests.platform.instances import own_redis
from tests.serving.conftest import rows_of


@pytest.fixture
def served(classifier_model, forest):
    """`cancer` v1 in production: the forest, whose answers are bit for bit the same however rows are batched, so an
    answer from the cache can be compared exactly with the model's own."""
    version = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return forest


def body(rows: list[dict]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def through_processor(bodies: list[bytes]) -> list[dict]:
    """Every body sent to the process's request processor at once, as the ASGI front does; the answers, in order."""

    async def send_all() -> list:
        loop = asyncio.get_running_loop()
        futures = []
        for raw in bodies:
            future = loop.create_future()
            request_processor().submit(Pending(predict_steps("cancer", raw, version=None, alias=None,
                                                             request_id=None), loop, future))  # fmt: skip
            futures.append(future)
            if len(futures) % 7 == 0:
                await asyncio.sleep(0)  # arrivals spread over several rounds
        return await asyncio.gather(*futures)

    answers = asyncio.run(send_all())
    assert [status for status, _, _ in answers] == [200] * len(bodies), [raw[:200] for _, _, raw in answers]
    return [json.loads(raw) for _, _, raw in answers]


def in_round(bodies: list[bytes]) -> list[dict]:
    pending = [Pending(predict_steps("cancer", raw, version=None, alias=None, request_id=None)) for raw in bodies]
    answer_round(pending, max_rows=64)
    assert [item.reply.status for item in pending] == [200] * len(bodies), [item.reply.payload for item in pending]
    return [item.reply.payload for item in pending]


def uncached(model, frame) -> tuple[list, list]:
    return model.estimator.predict(frame).tolist(), model.estimator.predict_proba(frame).tolist()


@pytest.mark.django_db(transaction=True)  # the processor thread reads the registry on its own connection
def test_every_answer_equals_the_uncached_one_under_concurrency(served, settings):
    """The processor's rounds and Django's request threads share both levels; half the rows repeat. Every answer,
    from a level or from the model, equals the model's own for that row; repeats are served from the cache."""
    settings.MODELWORKS_PREDICTION_CACHE = True
    settings.MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS = 2000  # a loaded machine's slow Redis is another test's subject
    frame = served.X_test.head(60)
    rows = rows_of(frame, 60)
    labels, probabilities = uncached(served, frame)
    order = [i % 30 if n % 2 else i for n, i in enumerate(range(60))]  # 50% repeats

    def inline(i: int):
        try:
            return predict(model_name="cancer", payload={"instances": [rows[i]]})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as threads:  # Django's path, at the same time as the processor's
        results = threads.map(inline, order[::3])
        answers = through_processor([body([rows[i]]) for i in order])
        answers += through_processor([body([rows[i]]) for i in order])  # every row seen before
        order += order
        results = list(results)
    for i, answer in zip(order, answers, strict=True):
        assert (answer["predictions"], answer["probabilities"]) == ([labels[i]], [probabilities[i]])
    for i, result in zip(order[:60:3], results, strict=True):
        assert (result.predictions, result.probabilities) == ([labels[i]], [probabilities[i]])
    assert [answer["cached"] for answer in answers[60:]] == [[True]] * 60

    request_processor().close_connections()  # or the test database cannot be flushed
    assert prediction_cache.drain_writes()
    settings.MODELWORKS_PREDICTION_CACHE_PROBE_EVERY = 1  # always ask Redis, however little it found lately
    prediction_cache.local().clear()  # level 1 gone (another process): level 2 answers, exactly the same
    seen = sorted(set(order))
    again = in_round([body([rows[i]]) for i in seen])
    assert [answer["cached"] for answer in again] == [[True]] * len(seen)
    assert [answer["probabilities"][0] for answer in again] == [probabilities[i] for i in seen]
    assert prediction_cache.local().get_many([prediction_cache.row_key("x", [])]) == {}


@pytest.fixture
def own_cache(settings):
    """The default cache (and so the prediction cache's level 2) on the test's own Redis."""
    with own_redis() as server:
        settings.MODELWORKS_CACHE_BACKOFF_MS = 300
        settings.MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS = 100
        settings.MODELWORKS_PREDICTION_CACHE_PROBE_EVERY = 1  # Redis asked every round (one test says otherwise)
        settings.CACHES = {"default": {"BACKEND": "config.cache.PooledRedisCache", "LOCATION": server.url,
                                       "OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}}}  # fmt: skip
        yield server


def commands(server, name: str) -> int:
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return stats.get(f"cmdstat_{name}", {}).get("calls", 0)


@pytest.mark.django_db
def test_one_round_looks_up_with_one_mget_and_writes_with_one_call(served, own_cache, settings):
    settings.MODELWORKS_PREDICTION_CACHE = True
    rows = rows_of(served.X_test, 20)
    in_round([body([row]) for row in rows])
    assert prediction_cache.drain_writes()  # sent by the writer thread: the processor never waits for them
    assert (commands(own_cache, "mget"), commands(own_cache, "set")) == (1, 20)
    assert commands(own_cache, "evalsha") <= 2  # one call (refused once with NOSCRIPT, the first time, then loaded)
    prediction_cache.local().clear()
    again = in_round([body([row]) for row in rows])
    assert [answer["cached"] for answer in again] == [[True]] * 20
    assert (commands(own_cache, "mget"), commands(own_cache, "set")) == (2, 20)
    in_round([body([row]) for row in rows])  # level 1 answers: Redis is not asked
    assert commands(own_cache, "mget") == 2


@pytest.mark.django_db
def test_redis_hung_or_down_mid_run_turns_hits_into_misses_with_no_error(served, own_cache, settings):
    settings.MODELWORKS_PREDICTION_CACHE = True
    frame = served.X_test.head(16)
    rows, (labels, probabilities) = rows_of(frame, 16), uncached(served, frame)
    expected = list(zip(labels, probabilities, strict=True))
    bodies = [body([row]) for row in rows]
    in_round(bodies)  # both levels hold every row
    assert prediction_cache.drain_writes()

    prediction_cache.local().clear()
    own_cache.pause()  # hung: every call would wait for ever without the timeout
    try:
        started = time.monotonic()
        answers = in_round(bodies)
        assert time.monotonic() - started < 5  # one 100 ms timeout, then Redis is skipped
    finally:
        own_cache.resume()
    assert [answer["cached"] for answer in answers] == [[False]] * 16
    assert [(a["predictions"][0], a["probabilities"][0]) for a in answers] == expected

    prediction_cache.local().clear()
    time.sleep(0.35)  # past the back-off: Redis is asked again, and still holds the rows
    assert [answer["cached"] for answer in in_round(bodies)] == [[True]] * 16

    prediction_cache.local().clear()
    own_cache.stop()  # down: connections refused
    answers = in_round(bodies)
    prediction_cache.local().clear()
    answers += in_round(bodies)
    assert [answer["cached"] for answer in answers] == [[False]] * 32
    assert [(a["predictions"][0], a["probabilities"][0]) for a in answers] == expected * 2


@pytest.mark.django_db
def test_level_two_is_asked_rarely_while_it_finds_nothing_and_again_once_it_does(served, own_cache, settings):
    """Rows that never repeat: after a few lookups that found nothing, one round in PROBE_EVERY asks Redis. Once
    Redis holds the rows (another process wrote them), the probes find them and every round asks again."""
    settings.MODELWORKS_PREDICTION_CACHE = True
    settings.MODELWORKS_PREDICTION_CACHE_PROBE_EVERY = 8
    frame = served.X_test.head(40)
    unique = [body([{**row, "mean radius": row["mean radius"] + n * 1e-9}]) for n, row in enumerate(rows_of(frame, 40))]
    for raw in unique[:24]:
        in_round([raw])
    asked = commands(own_cache, "mget")
    for raw in unique[24:]:
        in_round([raw])
    assert 1 <= commands(own_cache, "mget") - asked <= 16 // 8  # 16 rounds: only the probes asked
    assert prediction_cache.drain_writes()
    prediction_cache.local().clear()  # now only Redis holds those rows
    asked = commands(own_cache, "mget")
    answers = [in_round([raw])[0] for raw in unique[:24]]
    assert commands(own_cache, "mget") - asked > 12  # after the first probe's hits, (nearly) every round asks
    assert sum(answer["cached"][0] for answer in answers) > 12


@pytest.mark.django_db
def test_while_rows_never_repeat_only_a_row_seen_twice_is_cached(served, own_cache, settings):
    """Rows that never repeat stop costing writes (no SET, no level-1 entry) once lookups have found nothing for a
    while; a row that then comes back is cached on its second sighting and answered from the cache on its third."""
    settings.MODELWORKS_PREDICTION_CACHE = True
    frame = served.X_test.head(40)
    rows = rows_of(frame, 40)
    for n in range(160):  # 160 lookups finding nothing: the cache's hit share falls under Admission.MIN_HITS
        row = rows[n % 40]
        in_round([body([{**row, "mean radius": row["mean radius"] + n * 1e-9}])])
    assert prediction_cache.drain_writes()
    settled_sets, settled_entries = commands(own_cache, "set"), len(prediction_cache.local())
    fresh = [body([{**row, "mean radius": row["mean radius"] + 1e-6}]) for row in rows[:5]]
    first = [in_round([raw])[0] for raw in fresh]
    assert prediction_cache.drain_writes()
    assert (commands(own_cache, "set"), len(prediction_cache.local())) == (settled_sets, settled_entries)
    second = [in_round([raw])[0] for raw in fresh]
    third = [in_round([raw])[0] for raw in fresh]
    assert prediction_cache.drain_writes()
    assert commands(own_cache, "set") == settled_sets + 5
    assert [a["cached"] for a in first + second] == [[False]] * 10 and [a["cached"] for a in third] == [[True]] * 5
    assert [a["probabilities"] for a in third] == [a["probabilities"] for a in first]


@hypothesis_settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans(), st.integers(0, 40)), max_size=60))
def test_level_one_is_an_lru_bounded_by_bytes(operations):
    """Against an independent model of an LRU: the same entries kept, never more bytes than the bound."""
    cache = prediction_cache.LocalCache(max_bytes=3 * (1 + 30 + prediction_cache.ENTRY_OVERHEAD))
    model: OrderedDict[str, tuple[int, int]] = OrderedDict()  # key -> (value, size)
    for key, write, size in operations:
        if write:
            cache.set_many({key: ([size, None], size)}, 60)
            model.pop(key, None)
            model[key] = (size, 1 + size + prediction_cache.ENTRY_OVERHEAD)
            while sum(cost for _, cost in model.values()) > cache.max_bytes:
                model.popitem(last=False)
        else:
            found = cache.get_many([key])
            assert found == ({key: [model[key][0], None]} if key in model else {})
            if key in model:
                model.move_to_end(key)
        assert cache.bytes == sum(cost for _, cost in model.values()) <= cache.max_bytes
        assert len(cache) == len(model)
