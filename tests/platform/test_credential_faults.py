"""Token callers while Postgres hangs, against the platform as deployed (gunicorn with the ASGI front, its own
Postgres hung with SIGSTOP): the tokens verified before the hang are remembered for key_cache.TOKEN_SECONDS, past
that their requests answer 503 with Retry-After, and at no time do they stall the request processor, so API-key
callers beside them keep their answers coming as without them."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from serving import key_cache
from serving.tokens import user_token_create
from tests.platform.instances import SteadyLoad, own_postgres, own_redis, running_web
from tests.platform.processes import request, wait_for
from tests.platform.test_faults import PREDICT, RATE, SLOWEST_ANSWER_SECONDS, _assert_kept_answering, _headers, _warm

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
HANG_SECONDS = 9  # longer than a token is trusted without the database


def test_token_callers_do_not_stall_predictions_while_postgres_hangs(production_and_key, user, artifact_root, tmp_path):
    assert HANG_SECONDS > key_cache.TOKEN_SECONDS + 2
    key, row = production_and_key
    token = user_token_create(user=user)[1]
    token_headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    body = json.dumps({"instances": [row]}).encode()
    with own_postgres() as pg, own_redis() as redis_server:
        database = pg.copy_of_test_database("faults")
        with running_web(var=tmp_path / "web", artifact_root=artifact_root, database_url=database,
                         redis_url=redis_server.url) as port:  # fmt: skip
            _warm(port, key, body)
            wait_for(lambda: request(port, "POST", PREDICT, body, token_headers)[0] == 200, 10, "a token's prediction")
            with SteadyLoad(port, PREDICT, body, _headers(key), rate=RATE) as keyed, \
                    SteadyLoad(port, PREDICT, body, token_headers, rate=RATE) as tokened:  # fmt: skip
                time.sleep(1)
                hung_from = time.monotonic()
                pg.hang_for(HANG_SECONDS)
                hung_to = time.monotonic()
                time.sleep(2)

    _assert_kept_answering(keyed, hung_from, hung_to)  # the token callers cost the processor nothing that shows
    statuses = Counter(answer.status for answer in tokened.answers)
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    during = tokened.between(hung_from, hung_to)
    assert {a.status for a in during} == {200, 503}  # remembered for a while, then refused until Postgres is back
    refused = [{k.lower(): v for k, v in a.headers.items()} for a in during if a.status == 503]
    assert all(headers.get("retry-after", "").isdigit() for headers in refused)
    slowest = max(answer.done - answer.sent for answer in during)
    assert slowest < SLOWEST_ANSWER_SECONDS, f"a token caller waited {slowest:.1f} s of the {HANG_SECONDS} s hang"
    assert tokened.answers[-1].status == 200  # and verified again once it answers
