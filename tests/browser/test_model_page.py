"""A model's page in the console: versions side by side, a comparison, metric charts, aliases that move through the
registry's rules, the model's rollouts, experiments and monitors, and a prediction tried from a generated form."""

from __future__ import annotations

import pytest

from config.model_page import metrics_of
from registry.models import ModelAlias, RegisteredModel
from serving.models import PredictionLog
from tests.monitoring.conftest import flush

pytestmark = pytest.mark.django_db


def _open(page, console, name: str) -> None:
    page.goto(f"{console.url}/admin/")
    page.click(f"tr.mw-model-row[data-model='{name}'] td.mw-model a")
    assert page.locator("h1").inner_text() == name


def test_versions_side_by_side_and_compared(page, console):
    model = RegisteredModel.objects.get(name="diabetes-ridge")
    _open(page, console, model.name)
    rows = page.locator("#version-table tbody tr")
    assert rows.count() == model.versions.count() == 2
    production = model.aliases.get(name="production").version.version
    assert "production" in page.locator(f"#version-table tr[data-version='{production}']").inner_text()
    page.click("text=Compare the checked versions")
    assert "Check two or more versions" in page.inner_text("#content")
    for v in (1, 2):
        page.check(f"input[name=compare][value='{v}']")
    page.click("text=Compare the checked versions")
    comparison = page.locator("#comparison")
    assert "Side by side" in comparison.inner_text() and "Gate reports" in comparison.inner_text()
    first = model.versions.get(version=1)
    assert set(metrics_of(first)) >= {"rmse", "r2"}  # computed from the evaluation data at registration
    for name in metrics_of(first):
        assert name in comparison.inner_text()
    assert page.locator("#signature-diff tbody tr").count() == len(first.signature["inputs"])
    charts = page.locator(".mw-metric-chart [data-chart]")
    assert charts.count() == len({m for v in model.versions.all() for m in metrics_of(v)})
    drawn = charts.first.evaluate("el => el.mwChart.data.labels")
    assert drawn == ["v1", "v2"]


def test_the_page_joins_rollouts_experiments_and_monitors(page, console):
    _open(page, console, "diabetes-ridge")
    assert "v1 → v2" in page.inner_text("#content")  # the demo's canary
    _open(page, console, "breast-cancer-logreg")
    text = page.inner_text("#content")
    assert "logreg-regularised" in text  # the demo's experiment
    assert page.locator("h2#monitors + ul li").count() >= 1


def test_try_a_prediction_answers_with_route_and_latency_and_is_logged(page, console):
    model = RegisteredModel.objects.get(name="breast-cancer-forest")
    _open(page, console, model.name)
    before = PredictionLog.objects.filter(model_name=model.name).count()
    form = page.locator("#try-form")
    assert form.locator("input[type=number]").count() == 30  # one typed field per input of the signature
    page.click("#try-form button[type=submit]")
    answer = page.locator("#answer").inner_text()
    assert "Prediction" in answer and "route" in answer and " ms " in answer
    assert page.locator("#answer .mw-prediction").inner_text() in {"0", "1"}
    flush()  # the live server answers in this process: its log buffer is this one
    assert PredictionLog.objects.filter(model_name=model.name).count() == before + 1


def test_an_alias_move_goes_through_the_registrys_rules(page, console):
    # the demo's rollout holds diabetes-ridge's traffic: moving production by hand is refused, in words
    _open(page, console, "diabetes-ridge")
    row = page.locator("tr[data-alias='production']")
    row.locator("select").select_option("2")
    row.locator("button").click()
    assert "production was not moved: cannot move" in page.locator("ul.messagelist").text_content().lower()
    assert ModelAlias.objects.get(model__name="diabetes-ridge", name="production").version.version == 1


def test_a_viewer_sees_the_page_but_no_move_button_and_a_forged_move_is_refused(viewer_page, console):
    page = viewer_page
    _open(page, console, "breast-cancer-forest")
    row = page.locator("tr[data-alias='production']")
    assert row.locator("button").count() == 0
    assert "moving it needs deploy on breast-cancer-forest" in row.inner_text()
    # the form posted anyway (as a crafted request would): the registry's service refuses it, in words
    page.evaluate(
        """() => { const f = document.createElement('form'); f.method = 'post';
        for (const [k, v] of [['action', 'move'], ['alias', 'production'], ['version', '1'],
             ['csrfmiddlewaretoken', document.querySelector('[name=csrfmiddlewaretoken]').value]]) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit(); }"""
    )
    page.wait_for_load_state()
    assert "deploy" in page.locator("ul.messagelist").text_content()
