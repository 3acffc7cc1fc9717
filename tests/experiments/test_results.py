"""The results page's numbers, from exposures and monitoring's events and feedback, against statsmodels/scipy."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from scipy import stats as sps
from statsmodels.stats import proportion as smprop
from statsmodels.stats.weightstats import DescrStatsW, ttest_ind

from experiments import exposures, selectors, services
from experiments.models import Exposure
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from serving import prediction_log, traffic
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db


def expose(experiment, keys, *, drop_from: str | None = None, drop_every: int = 0):
    """Serve each key once through the experiment's split and flush the first exposures, as the router does."""
    split = traffic.active_split(experiment.model_id)
    arms = {}
    for i, key in enumerate(keys):
        arm = split.arm_for(key)
        if drop_from == arm.name and drop_every and i % drop_every == 0:
            continue  # planted: this arm's exposures get lost
        split.on_route(arm, key)
        arms[key] = arm.name
    exposures.exposure_buffer().flush()
    return arms


def test_conversion_results_equal_statsmodels_on_the_raw_data(experiment, staff):
    services.experiment_start(experiment=experiment)
    arms = expose(experiment, [f"user-{i}" for i in range(3000)])
    rng = np.random.default_rng(3)
    rate = {"control": 0.10, "forest": 0.13}
    later = timezone.now() + timedelta(seconds=1)
    converted = {key for key, arm in arms.items() if rng.random() < rate[arm]}
    business_events_record(items=[EventItem(key=k, name="purchase", value=1.0, time=later) for k in converted])
    # Noise that must not count: another event name, and a purchase before the key was first exposed.
    early = timezone.now() - timedelta(days=1)
    noise = [EventItem(key="user-1", name="signup", time=later), EventItem(key="user-2", name="purchase", time=early)]
    business_events_record(items=noise)

    results = selectors.experiment_results(experiment)
    primary = {row["arm"]: row for row in results["primary"]["arms"]}
    outcome = {name: np.array([k in converted for k, a in arms.items() if a == name], float) for name in rate}
    for name, values in outcome.items():
        assert primary[name]["n"] == len(values)
        assert primary[name]["mean"] == pytest.approx(values.mean())
        assert primary[name]["ci"] == pytest.approx(list(smprop.proportion_confint(values.sum(), len(values),
                                                                                   method="wilson")))  # fmt: skip
    c, t = outcome["control"], outcome["forest"]
    _, p_value = smprop.proportions_ztest([t.sum(), c.sum()], [len(t), len(c)])
    versus = primary["forest"]["vs_control"]
    assert versus["p_value"] == pytest.approx(p_value)
    assert versus["absolute_lift"] == pytest.approx(t.mean() - c.mean())
    assert versus["relative_lift"] == pytest.approx(t.mean() / c.mean() - 1)
    assert versus["test"] == "two-proportion z"
    assert results["trustworthy"] and results["allocation"]["srm"]["mismatch"] is False
    assert results["primary"]["series"]["arms"]["forest"][-1] == pytest.approx(t.mean())
    assert "planned sample size" in results["peeking"]
    sample = results["sample_size"]
    assert sample["planned"] >= sample["required_for_mde"] > 1000  # 5% relative lift on ~10%: tens of thousands
    assert sample["progress"] == pytest.approx(min(len(c), len(t)) / sample["planned"])


def test_mean_value_results_are_welch_tests_on_per_key_sums(production, challenger):
    experiment = services.experiment_create(
        model=production.model, name="order-value", primary_metric={"kind": "mean_value", "event": "order"},
        arms=[{"name": "control", "version": 1, "weight": 1}, {"name": "forest", "version": 2, "weight": 1}],
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    arms = expose(experiment, [f"shopper-{i}" for i in range(400)])
    rng = np.random.default_rng(5)
    later = timezone.now() + timedelta(seconds=1)
    events, per_key = [], dict.fromkeys(arms, 0.0)
    for key in arms:
        for _ in range(rng.poisson(0.7)):
            value = float(np.round(rng.lognormal(3, 1), 2))
            events.append(EventItem(key=key, name="order", value=value, time=later))
            per_key[key] += value
    business_events_record(items=events)
    primary = {row["arm"]: row for row in selectors.experiment_results(experiment)["primary"]["arms"]}
    c = np.array([v for k, v in per_key.items() if arms[k] == "control"])
    t = np.array([v for k, v in per_key.items() if arms[k] == "forest"])
    assert primary["control"]["mean"] == pytest.approx(c.mean())
    assert primary["forest"]["vs_control"]["p_value"] == pytest.approx(sps.ttest_ind(t, c, equal_var=False).pvalue)
    assert primary["forest"]["vs_control"]["test"] == "welch t"


@pytest.mark.parametrize("offset", [1e8, 1e9])
def test_mean_value_variances_survive_values_far_from_zero(production, challenger, offset):
    # Issue 19 item 4: the database summed value * value and the variance came from E[x^2] - E[x]^2, which at
    # values near 1e8 with a standard deviation of 1 has no correct digit left; now it answers AVG and VAR_POP.
    experiment = services.experiment_create(
        model=production.model, name="big-values", primary_metric={"kind": "mean_value", "event": "order"},
        arms=[{"name": "control", "version": 1, "weight": 1}, {"name": "forest", "version": 2, "weight": 1}],
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    arms = expose(experiment, [f"shopper-{i}" for i in range(1500)])
    rng = np.random.default_rng(11)
    later = timezone.now() + timedelta(seconds=1)
    per_key = {key: offset + (0.1 if arm == "forest" else 0.0) + rng.normal() for key, arm in arms.items()}
    business_events_record(items=[EventItem(key=k, name="order", value=v, time=later) for k, v in per_key.items()])
    primary = {row["arm"]: row for row in selectors.experiment_results(experiment)["primary"]["arms"]}
    c = np.array([v for k, v in per_key.items() if arms[k] == "control"])
    t = np.array([v for k, v in per_key.items() if arms[k] == "forest"])
    _, p_value, _ = ttest_ind(t, c, usevar="unequal")
    versus = primary["forest"]["vs_control"]
    assert versus["p_value"] == pytest.approx(p_value, rel=1e-3)  # statsmodels' own float sums: ~1e-5 here
    assert versus["significant"] == (p_value < experiment.alpha)
    low, high = DescrStatsW(c).tconfint_mean()
    assert primary["control"]["ci"] == pytest.approx([low, high], abs=1e-5)  # a few spacings of 1e9: the means
    ours = primary["control"]["ci"]
    assert ours[1] - ours[0] == pytest.approx(high - low, rel=1e-6)  # the width: the variance's precision


def test_a_planted_52_48_split_on_50_50_weights_is_flagged_untrustworthy(experiment):
    services.experiment_start(experiment=experiment)
    arms = expose(experiment, [f"visitor-{i}" for i in range(20_000)], drop_from="forest", drop_every=13)
    counts = [list(arms.values()).count("control"), list(arms.values()).count("forest")]
    assert 0.515 < counts[0] / sum(counts) < 0.525  # about 52/48
    results = selectors.experiment_results(experiment)
    assert results["allocation"]["srm"]["mismatch"] is True and results["trustworthy"] is False
    assert results["allocation"]["srm"]["p_value"] == pytest.approx(sps.chisquare(counts).pvalue)


def test_an_unbroken_allocation_passes_the_sample_ratio_check(experiment):
    services.experiment_start(experiment=experiment)
    expose(experiment, [f"visitor-{i}" for i in range(20_000)])
    assert selectors.experiment_results(experiment)["trustworthy"] is True


def test_after_a_weight_change_only_later_exposures_are_checked_against_the_new_weights(experiment):
    services.experiment_start(experiment=experiment)
    expose(experiment, [f"early-{i}" for i in range(4000)])
    services.experiment_set_weights(experiment=experiment, weights={"control": 90, "forest": 10})
    experiment.refresh_from_db()
    Exposure.objects.filter(experiment=experiment).update(first_seen_at=experiment.allocation_changed_at
                                                          - timedelta(seconds=1))  # fmt: skip
    expose(experiment, [f"late-{i}" for i in range(4000)])
    allocation = selectors.experiment_results(experiment)["allocation"]
    assert sum(arm["exposed"] for arm in allocation["arms"]) == 8000
    assert sum(arm["exposed_since_allocation_change"] for arm in allocation["arms"]) == 4000
    assert allocation["srm"]["mismatch"] is False


def test_quality_from_feedback_on_each_arms_own_predictions(caller, logreg, experiment):
    services.experiment_start(experiment=experiment)
    answers = []
    for i in range(40):
        row = rows_of(logreg.X_test.iloc[[i]], 1)
        answer = post(caller, "/api/v1/models/cancer/predict", {"instances": row, "key": f"patient-{i}"}).json()
        answers.append((answer, int(logreg.y_test.iloc[i])))
    prediction_log.prediction_log().flush()
    feedback_record(items=[FeedbackItem(actual=truth, request_id=a["request_id"]) for a, truth in answers])
    guardrail = selectors.experiment_results(experiment)["guardrails"][0]
    assert guardrail["label"] == "accuracy (feedback)"
    for row in guardrail["arms"]:
        mine = [a["predictions"][0] == truth for a, truth in answers if a["route"].endswith(":" + row["arm"])]
        assert row["n"] == len(mine) and row["mean"] == pytest.approx(np.mean(mine))


def _two_allocations(experiment):
    """50/50 for a first period whose keys convert at 20%, then 90/10 for a second one at 5%, the same in both
    arms: a pure change over time, which the arms see in different proportions."""
    services.experiment_start(experiment=experiment)
    early = expose(experiment, [f"early-{i}" for i in range(3000)])
    services.experiment_set_weights(experiment=experiment, weights={"control": 90, "forest": 10})
    experiment.refresh_from_db()
    before = experiment.allocation_changed_at - timedelta(seconds=1)
    Exposure.objects.filter(experiment=experiment).update(first_seen_at=before)
    late = expose(experiment, [f"late-{i}" for i in range(6000)])
    rng = np.random.default_rng(8)
    converted = {k for k in early if rng.random() < 0.20} | {k for k in late if rng.random() < 0.05}
    later = timezone.now() + timedelta(seconds=1)
    business_events_record(items=[EventItem(key=k, name="purchase", time=later) for k in converted])
    return early, late, converted


def test_after_a_weight_change_results_default_to_the_keys_exposed_since(experiment):
    # Issue 19 item 8: a key keeps the arm of its first exposure, so over both periods forest (10% of the late
    # traffic) holds mostly high-converting early keys and "wins"; since the change, both arms convert alike.
    early, late, converted = _two_allocations(experiment)
    results = selectors.experiment_results(experiment)
    period = results["period"]
    assert period["selected"] == "since_weight_change" and period["since"] == experiment.allocation_changed_at
    assert period["mixed_allocations"] is False and period["left_out"] == len(early)
    assert "since the last weight change" in period["note"] and len(period["weights_changed_at"]) == 1
    primary = {row["arm"]: row for row in results["primary"]["arms"]}
    outcome = {arm: np.array([k in converted for k, a in late.items() if a == arm], float) for arm in primary}
    assert {arm: row["n"] for arm, row in primary.items()} == {arm: len(v) for arm, v in outcome.items()}
    c, t = outcome["control"], outcome["forest"]
    _, p_value = smprop.proportions_ztest([t.sum(), c.sum()], [len(t), len(c)])
    assert primary["forest"]["vs_control"]["p_value"] == pytest.approx(p_value)
    assert primary["forest"]["vs_control"]["significant"] is False
    assert results["trustworthy"] is True and results["allocation"]["srm"]["mixed_allocations"] is False

    mixed = selectors.experiment_results(experiment, "all")
    assert mixed["period"]["mixed_allocations"] is True and mixed["allocation"]["srm"]["mixed_allocations"] is True
    assert "mix periods with different allocations" in mixed["period"]["note"] and mixed["trustworthy"] is False
    everything = {row["arm"]: row for row in mixed["primary"]["arms"]}
    assert sum(row["n"] for row in everything.values()) == len(early) + len(late)
    assert everything["forest"]["vs_control"]["significant"] is True  # the bias the default view avoids
    # The sample ratio check stays on the exposures since the change in both views.
    assert mixed["allocation"]["srm"] == {**results["allocation"]["srm"], "mixed_allocations": True}


def test_one_allocation_throughout_is_the_whole_experiment_in_both_views(experiment):
    started = services.experiment_start(experiment=experiment).started_at
    # The same split in other numbers moves no bucket: no new period, and the history still records the call.
    services.experiment_set_weights(experiment=experiment, weights={"control": 1, "forest": 1})
    experiment.refresh_from_db()
    assert experiment.allocation_changed_at == started
    assert experiment.events.filter(action="experiment.weights_changed").count() == 1
    expose(experiment, [f"user-{i}" for i in range(200)])
    for view in ("since_weight_change", "all"):
        period = selectors.experiment_results(experiment, view)["period"]
        assert period["since"] is None and period["mixed_allocations"] is False and period["left_out"] == 0
        assert "did not change" in period["note"]
        assert sum(row["n"] for row in selectors.experiment_results(experiment, view)["primary"]["arms"]) == 200
    draft = services.experiment_create(
        model=experiment.model, name="draft-one", primary_metric={"kind": "conversion", "event": "purchase"},
        arms=[{"name": "control", "version": 1, "weight": 1}, {"name": "forest", "version": 2, "weight": 1}],
    )  # fmt: skip
    services.experiment_set_weights(experiment=draft, weights={"control": 3, "forest": 1})  # before it starts
    draft.refresh_from_db()
    period = selectors.experiment_results(draft)["period"]
    assert period["since"] is None and period["mixed_allocations"] is False


def test_an_unknown_period_is_a_field_error():
    with pytest.raises(ValidationError) as caught:
        selectors.results_period("yesterday")
    assert "period" in caught.value.message_dict
    assert selectors.results_period(None) == selectors.results_period("") == "since_weight_change"
