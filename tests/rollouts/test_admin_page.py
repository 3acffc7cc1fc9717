"""The rollout's admin page tells a staff user the truth: what takes the traffic now, how a finished rollout ended,
each stage's observed candidate share against that stage's own target, and only the controls its state allows."""

from __future__ import annotations

import re

import pytest

from rollouts import services as rollouts
from rollouts.models import Rollout
from serving import routing
from serving.prediction_log import prediction_log
from tests.rollouts.conftest import Traffic, sample_rows
from tests.rollouts.test_rollouts import let_the_stage_run_out

pytestmark = pytest.mark.django_db

BUTTONS = ("Pause", "Resume", "Promote now", "Abort (roll back)")
STAGE_ROW = re.compile(
    r"<tr><td>stage (\d)( \(now\))?</td><td>(\d+)%</td><td>([\d.]+)%</td><td>(\d+)</td><td>(\d+)</td></tr>"
)


def page(client, rollout: Rollout) -> str:
    response = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def buttons(html: str) -> set[str]:
    return {label for label in BUTTONS if f'type="submit">{label}</button>' in html}


def stage_rows(html: str) -> list[tuple[int, bool, int, float, int, int]]:
    return [(int(s), bool(now), int(t), float(o), int(b), int(c)) for s, now, t, o, b, c in STAGE_ROW.findall(html)]


def serve(logreg, count: int) -> None:
    Traffic().send(sample_rows(logreg), count=count)
    prediction_log().flush()


def test_an_active_rollout_offers_only_the_controls_its_state_allows(client, staff, canary_model, baseline, candidate):
    client.force_login(staff)
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stages=[10, 50, 100])
    pending = page(client, rollout)
    assert "pending: 100% v1 until the first stage starts" in pending
    assert buttons(pending) == {"Pause", "Promote now", "Abort (roll back)"}
    assert "no stage started yet" in pending

    rollouts.tick()
    running = page(client, rollout)
    assert "90% v1 / 10% v2" in running
    assert buttons(running) == {"Pause", "Promote now", "Abort (roll back)"}

    client.post(f"/admin/rollouts/rollout/{rollout.pk}/control/pause/")
    paused = page(client, rollout)
    assert "90% v1 / 10% v2 (held while paused)" in paused
    assert buttons(paused) == {"Resume", "Promote now", "Abort (roll back)"}

    # A control the state does not allow, posted anyway (a stale page): refused with the reason, nothing changes.
    refused = client.post(f"/admin/rollouts/rollout/{rollout.pk}/control/pause/", follow=True).content.decode()
    assert "Cannot pause a rollout that is paused" in refused
    client.post(f"/admin/rollouts/rollout/{rollout.pk}/control/resume/")
    assert buttons(page(client, rollout)) == {"Pause", "Promote now", "Abort (roll back)"}


def test_a_promoted_rollout_shows_how_it_ended_and_each_stage_against_its_own_target(
    client, staff, canary_model, baseline, candidate, logreg
):
    client.force_login(staff)
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stages=[10, 50, 100],
                                     analysis={"min_requests": 5, "p99_min_delta_ms": 10_000})  # fmt: skip
    rollouts.tick()
    serve(logreg, 300)
    during = page(client, rollout)
    assert "this stage: candidate share observed" in during and "(target 10%)" in during
    [(stage, now, target, observed, base_n, cand_n)] = stage_rows(during)
    assert (stage, now, target, base_n + cand_n) == (1, True, 10, 300)
    assert 3 <= observed <= 20  # 10% of 300 random keys

    let_the_stage_run_out(rollout)
    assert rollouts.tick()[0]["step"] == "next_stage"  # the same model: healthy (latency noise on a busy box aside)
    routing.clear_cache()  # what the route cache's 500 ms does in every process
    serve(logreg, 300)
    rollouts.rollout_promote(rollout=Rollout.objects.get(pk=rollout.pk))

    finished = page(client, rollout)
    assert "finished: v2 became production" in finished
    assert "v1 / " not in finished  # no "split now" of a rollout that holds no traffic any more
    assert "(target 0%)" not in finished and "(target" not in finished
    assert buttons(finished) == set()
    rows = stage_rows(finished)
    assert [(stage, now, target) for stage, now, target, *_ in rows] == [(1, False, 10), (2, False, 50)]
    assert 3 <= rows[0][3] <= 20 and 35 <= rows[1][3] <= 65  # each stage read against its own target
    assert [b + c for *_, b, c in rows] == [300, 300]

    listing = client.get("/admin/rollouts/rollout/").content.decode()
    assert "finished: v2 became production" in listing


def test_an_aborted_rollout_says_production_stayed_and_offers_nothing(client, staff, canary_model, baseline, candidate):
    client.force_login(staff)
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stages=[25, 100])
    rollouts.tick()
    client.post(f"/admin/rollouts/rollout/{rollout.pk}/control/abort/")
    html = page(client, rollout)
    assert "finished (aborted): v1 kept production, v2 no longer takes its traffic" in html
    assert "75% v1 / 25% v2" not in html
    assert buttons(html) == set()
    assert [(stage, target) for stage, _, target, *_ in stage_rows(html)] == []  # no traffic: no observed share
    assert "<td>stage 1</td><td>25%</td><td>-</td><td>0</td><td>0</td>" in html
