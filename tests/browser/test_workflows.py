"""A data scientist's day in the console, in a real browser: register a retrained version through the form (artifact
and evaluation CSV), see its gates pass, start a rollout of it from the validated versions offered, pause it and
resume it — each step checked by what the page says."""

from __future__ import annotations

import re

import pytest
import skops.io as sio
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from registry.models import ModelVersion
from rollouts.models import Rollout, RolloutStatus

pytestmark = pytest.mark.django_db

MODEL = "breast-cancer-forest"  # the demo model with no rollout or experiment of its own


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """A retrained forest (fewer trees) and its held-out evaluation CSV, as files a person would pick."""
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    folder = tmp_path_factory.mktemp("retrained")
    artifact = folder / "forest-30.skops"
    artifact.write_bytes(sio.dumps(RandomForestClassifier(n_estimators=30, random_state=1).fit(X_train, y_train)))
    evaluation = folder / "holdout.csv"
    evaluation.write_text(X_test.assign(target=y_test).to_csv(index=False))
    return artifact, evaluation


def test_register_a_version_then_roll_it_out_pause_and_resume(page, console, retrained):
    artifact, evaluation = retrained
    page.goto(f"{console.url}/admin/registry/modelversion/")
    page.click(".object-tools a.addlink")  # "Add model version": the registration form
    page.select_option("select[name=model]", label=MODEL)
    page.set_input_files("input[name=artifact]", str(artifact))
    page.set_input_files("input[name=evaluation_data]", str(evaluation))
    page.fill("textarea[name=lineage]", "source = notebook\nticket = DS-42")
    page.click("input[type=submit]")

    message = page.locator(".messagelist").inner_text()
    assert re.search(rf"Registered {MODEL} v2: validated", message), message
    report = page.inner_text("#content")
    assert "Status:\nvalidated" in report
    assert re.search(r"accuracy >= 0\.9\tpass\t0\.9\d", report) and "f1 >= production - 0.02\tpass" in report
    version = ModelVersion.objects.get(model__name=MODEL, version=2)
    assert version.lineage == {"source": "notebook", "ticket": "DS-42"}
    assert version.gate_report["metrics"]["accuracy"] >= 0.9

    page.goto(f"{console.url}/admin/rollouts/rollout/")
    page.click(".object-tools a.addlink")  # "Add rollout": the start form
    offered = page.locator("select[name=candidate] option").all_inner_texts()
    assert f"{MODEL} v2" in offered and f"{MODEL} v1" not in offered  # production is not a candidate
    page.select_option("select[name=candidate]", label=f"{MODEL} v2")
    page.fill("input[name=stages]", "20,100")
    page.fill("input[name=stage_seconds]", "120")
    page.click("input[type=submit]")

    assert "Started" in page.locator(".messagelist").inner_text()
    rollout = Rollout.objects.get(model__name=MODEL)
    assert "100% v1 until the first stage starts" in page.inner_text("#content")
    assert page.locator("button:has-text('Resume')").count() == 0  # only what the state allows

    page.click("button:has-text('Pause')")
    assert "pause done" in page.locator(".messagelist").inner_text()
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED
    assert page.locator("button:has-text('Pause')").count() == 0
    assert "paused" in page.inner_text("#content")

    page.click("button:has-text('Resume')")
    assert "resume done" in page.locator(".messagelist").inner_text()
    rollout.refresh_from_db()
    assert rollout.status != RolloutStatus.PAUSED
    assert page.locator("button:has-text('Pause')").count() == 1
    page.click("button:has-text('Abort')")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED
    assert "aborted" in page.inner_text("#content")
