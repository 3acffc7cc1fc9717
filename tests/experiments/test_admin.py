"""The experiments console in a staff browser session: pages, results, chart, and the action buttons."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from experiments import exposures, services
from experiments.models import Experiment, Exposure
from monitoring.services.events import EventItem, business_events_record
from registry.models import ModelAlias
from serving import traffic
from tests.charts import chart_specs

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(client, staff):
    client.force_login(staff)
    return client


def page(console, experiment) -> str:
    response = console.get(reverse("admin:experiments_experiment_change", args=[experiment.pk]))
    assert response.status_code == 200
    return response.content.decode()


def act(console, experiment, action, **data):
    response = console.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, action]), data)
    assert response.status_code == 302
    return console.get(response["Location"]).content.decode()


def test_results_page_shows_allocation_srm_intervals_chart_and_conclude(console, experiment):
    services.experiment_start(experiment=experiment)
    split = traffic.active_split(experiment.model_id)
    for i in range(400):
        split.on_route(split.arm_for(f"u{i}"), f"u{i}")
    exposures.exposure_buffer().flush()
    yesterday = timezone.now() - timedelta(days=1)
    Exposure.objects.filter(experiment=experiment, key__endswith="7").update(first_seen_at=yesterday)
    business_events_record(items=[EventItem(key=f"u{i}", name="purchase") for i in range(0, 400, 3)])

    html = page(console, experiment)
    assert "ok (p=" in html and "expected share" in html and "50.0%" in html
    assert "conversion to &#x27;purchase&#x27;" in html and "95% CI" in html and "relative CI" in html
    (over_time,) = [s for s in chart_specs(html) if s["kind"] == "line"]
    assert over_time["per_day"] and [d["label"] for d in over_time["datasets"]] == ["control", "forest"]
    assert all(len(d["points"]) == 2 for d in over_time["datasets"])  # one point per arm and day, two days
    assert "hold only when read once at the planned sample size" in html
    assert "Conclude: promote the winner to production" in html
    # Nothing is fetched from outside (a random CSRF token may well contain "cdn", so look at the URLs).
    assert not re.search(r'(src|href)="(https?:)?//', html)
    changelist = console.get(reverse("admin:experiments_experiment_changelist")).content.decode()
    assert "forest-vs-logreg" in changelist and "ok (p=" in changelist


def test_an_srm_mismatch_is_shown_plainly(console, experiment):
    services.experiment_start(experiment=experiment)
    split = traffic.active_split(experiment.model_id)
    for i in range(4000):
        arm = split.arm_for(f"v{i}")
        if arm.name == "control" or i % 5:
            split.on_route(arm, f"v{i}")
    exposures.exposure_buffer().flush()
    assert "MISMATCH" in page(console, experiment)


def test_buttons_start_reweight_stop_and_conclude(console, experiment):
    assert "Start: give it" in page(console, experiment)
    assert "start done" in act(console, experiment, "start")
    html = act(console, experiment, "weights", **{"weight-control": "70", "weight-forest": "30"})
    assert "weights done" in html
    assert [a.weight for a in experiment.arms.order_by("position")] == [70, 30]
    html = act(console, experiment, "weights", **{"weight-control": "x"})
    assert "weights are integers from 0 to 1000000" in html.lower()
    assert "stop done" in act(console, experiment, "stop")
    assert "no arm named" in act(console, experiment, "conclude", winner="nobody").lower()  # the admin capitalises
    assert "conclude done" in act(console, experiment, "conclude", winner="forest", message="better")
    assert ModelAlias.objects.get(name="production").version.version == 2
    assert "experiment.concluded" in page(console, experiment)


def test_creating_from_the_console(console, challenger):
    form = {
        "name": "console-made", "model": challenger.model_id, "arms": "control=1:90\nforest=2:10",
        "primary_metric": "mean_value:order", "guardrails": "quality", "minimum_sample_size": "200",
        "minimum_detectable_effect": "0.1", "power": "0.8", "alpha": "0.05", "keyless_to_control": "on",
        "start": "on",
    }  # fmt: skip
    response = console.post(reverse("admin:experiments_experiment_create"), form)
    experiment = Experiment.objects.get(name="console-made")
    assert response.status_code == 302 and experiment.status == "running"
    assert experiment.guardrail_metrics == [{"kind": "quality"}]

    bad = console.post(reverse("admin:experiments_experiment_create"), {**form, "name": "other", "arms": "c=1"})
    assert "expected NAME=VERSION:WEIGHT" in bad.content.decode()
    clash = console.post(reverse("admin:experiments_experiment_create"), {**form, "name": "other"})
    assert "already has experiment &#x27;console-made&#x27; running" in clash.content.decode()
    assert not Experiment.objects.filter(name="other").exists(), "not started: not created either"


def test_the_console_requires_a_staff_login_and_actions_need_post(client, user, console, experiment):
    assert console.get(reverse("admin:experiments_experiment_act", args=[experiment.pk, "start"])).status_code == 405
    client.force_login(user)
    response = client.post(reverse("admin:experiments_experiment_act", args=[experiment.pk, "start"]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    experiment.refresh_from_db()
    assert experiment.status == "draft"


def test_after_a_weight_change_the_page_shows_the_period_and_links_to_all_of_it(console, experiment):
    services.experiment_start(experiment=experiment)
    services.experiment_set_weights(experiment=experiment, weights={"control": 80, "forest": 20})
    html = page(console, experiment)
    assert "Results since the last weight change" in html and "?period=all" in html
    url = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    everything = console.get(url + "?period=all").content.decode()
    assert "mix periods with different allocations" in everything
    assert "Show the results since the last weight change" in everything
    assert "mix periods" not in console.get(url + "?period=nonsense").content.decode()  # the default
