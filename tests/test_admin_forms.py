"""The console's forms: typed widgets instead of JSON, and the services' checks (in words) behind every save.

A monitor or a serving policy saved from the admin is refused exactly where the API would refuse it, and nothing is
stored when it is."""

from __future__ import annotations

import pytest
from django import forms
from hypothesis import given
from hypothesis import strategies as st

from config.admin_forms import DurationField, KeyValueField, LinesField
from config.durations import format_duration, parse_duration
from monitoring.models import Monitor
from registry import services as registry
from serving.models import ServingPolicy

MONITOR_DEFAULTS = {
    "window_hours": "24", "window_rows": "", "max_rows": "100000", "min_rows": "30", "every_minutes": "60",
    "p_threshold": "0.05", "correction": "none", "dataset_drift_share": "0.5", "min_wasserstein": "",
    "min_psi": "", "webhook_url": "", "enabled": "on",
}  # fmt: skip


@pytest.fixture
def console(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def cancer_v1(classifier_model, logreg):
    return registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )


def test_a_monitor_from_the_console_is_checked_like_the_apis(console, cancer_v1, regressor_model):
    page = console.get("/admin/monitoring/monitor/add/").content.decode()
    assert '<select name="model"' in page  # a select, not a raw number box
    assert '<optgroup label="cancer">' in page and "v1 (validated)" in page  # versions grouped by model
    assert 'name="quality_thresholds_0"' in page  # one number box per metric

    bad = console.post("/admin/monitoring/monitor/add/", {
        **MONITOR_DEFAULTS, "model": regressor_model.pk, "name": "hourly", "version": "", "p_threshold": "5",
    }).content.decode()  # fmt: skip
    assert "must be between 0 and 1" in bad  # the service's words for p_threshold
    assert not Monitor.objects.exists()

    pinned_elsewhere = console.post("/admin/monitoring/monitor/add/", {
        **MONITOR_DEFAULTS, "model": regressor_model.pk, "name": "hourly", "version": "1",
    }).content.decode()  # fmt: skip
    assert "diabetes has no version 1" in pinned_elsewhere  # v1 is cancer's, not diabetes'
    assert not Monitor.objects.exists()

    accuracy_box = _box_of(page, "accuracy")
    made = console.post("/admin/monitoring/monitor/add/", {
        **MONITOR_DEFAULTS, "model": cancer_v1.model.pk, "name": "hourly", "version": "1",
        accuracy_box: "0.9",
    })  # fmt: skip
    assert made.status_code == 302
    monitor = Monitor.objects.get()
    assert monitor.version == 1 and monitor.quality_thresholds == {"accuracy": 0.9}

    change = console.get(f"/admin/monitoring/monitor/{monitor.pk}/change/").content.decode()
    assert "rmse <input" not in change and "f1 <input" in change  # a classifier's metrics only
    assert 'value="0.9"' in change
    edited = console.post(f"/admin/monitoring/monitor/{monitor.pk}/change/", {
        **MONITOR_DEFAULTS, "version": "", "dataset_drift_share": "0",
    }).content.decode()  # fmt: skip
    assert "must be in (0, 1]" in edited
    monitor.refresh_from_db()
    assert monitor.version == 1 and monitor.dataset_drift_share == 0.5  # nothing stored
    followed = console.post(f"/admin/monitoring/monitor/{monitor.pk}/change/", {**MONITOR_DEFAULTS, "version": ""})
    assert followed.status_code == 302
    monitor.refresh_from_db()
    assert monitor.version is None and monitor.quality_thresholds == {}  # unpinned; the emptied box removed


def _box_of(page: str, metric: str) -> str:
    """The input name of `metric`'s box in the quality thresholds row."""
    label = page.index(f"{metric} <input", page.index('class="numbers-by-name"'))
    start = page.index('name="', label) + len('name="')
    return page[start : page.index('"', start)]


def test_a_serving_policy_takes_durations_and_is_refused_in_words(console, classifier_model):
    form = {
        "model": classifier_model.pk, "deterministic": "on", "cache_ttl_seconds": "10m", "inference_budget_ms": "0",
        "breaker_consecutive_failures": "5", "breaker_error_rate": "2", "breaker_window_seconds": "30s",
        "breaker_min_requests": "20", "breaker_cooldown_seconds": "soon",
    }  # fmt: skip
    bad = console.post("/admin/serving/servingpolicy/add/", form).content.decode()
    assert "&#x27;soon&#x27; is not a duration" in bad
    assert not ServingPolicy.objects.exists()
    bad = console.post("/admin/serving/servingpolicy/add/", {**form, "breaker_cooldown_seconds": "10s"})
    body = bad.content.decode()
    assert "must be between 1 and 600,000" in body and "must be between 0.01 and 1" in body
    assert not ServingPolicy.objects.exists()
    good = console.post(
        "/admin/serving/servingpolicy/add/",
        {**form, "inference_budget_ms": "250", "breaker_error_rate": "0.4", "breaker_cooldown_seconds": "2m"},
    )
    assert good.status_code == 302
    policy = ServingPolicy.objects.get()
    assert (policy.cache_ttl_seconds, policy.inference_budget_ms, policy.breaker_cooldown_seconds) == (600, 250, 120)
    listing = console.get("/admin/serving/servingpolicy/").content.decode()
    assert ">10m<" in listing
    change = console.get(f"/admin/serving/servingpolicy/{policy.pk}/change/").content.decode()
    assert 'value="10m"' in change and 'value="2m"' in change


@given(st.integers(min_value=0, max_value=10**9))
def test_a_duration_reads_back_as_written(seconds):
    assert parse_duration(format_duration(seconds)) == seconds
    field = DurationField()
    assert field.clean(field.prepare_value(seconds)) == seconds


@pytest.mark.parametrize("raw", ["", "1.5h", "-3m", "3 days", "h", "12y"])
def test_a_duration_that_is_not_one_is_refused_in_words(raw):
    with pytest.raises(forms.ValidationError) as refused:
        DurationField(required=True).clean(raw)
    assert refused.value.messages[0] in ("This field is required.", f"{raw!r} is not a duration (seconds, or like "
                                         "90s, 15m, 12h, 30d, 2w)")  # fmt: skip


WORD = st.text(st.characters(categories=["L", "N"], include_characters="_-.:"), min_size=1, max_size=12)


@given(st.dictionaries(WORD, WORD.filter(lambda s: s.strip() == s), max_size=5))
def test_a_mapping_reads_back_as_written(mapping):
    field = KeyValueField()
    assert field.clean(field.prepare_value(mapping)) == mapping


@given(st.lists(WORD, max_size=6))
def test_a_list_reads_back_as_written(items):
    field = LinesField()
    assert field.clean(field.prepare_value(items)) == items


@pytest.mark.parametrize("kind", ["feedback", "businessevent", "referencedataset"])
def test_rows_checked_by_the_api_are_added_only_by_upload(console, kind):
    """Feedback, events and reference samples have no unchecked one-row form: "add" is the CSV upload, which goes
    through the API's checks."""
    added = console.get(f"/admin/monitoring/{kind}/add/")
    assert added.status_code == 302 and added["Location"] == f"/admin/monitoring/{kind}/upload/"
    refused = console.post(f"/admin/monitoring/{kind}/add/", {"request_id": "r1", "actual": "1"})
    assert refused.status_code == 302 and refused["Location"].endswith("/upload/")
    upload = console.get(added["Location"]).content.decode()
    assert 'type="file"' in upload
