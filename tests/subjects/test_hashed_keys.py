"""MODELWORKS_HASH_ROUTING_KEYS: routing keys at rest only as their keyed hash; every join still works."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from experiments import exposures, selectors
from experiments import services as experiments
from experiments.models import Exposure
from monitoring.models import BusinessEvent, Feedback
from monitoring.selectors import business_impact
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from registry.subjects import keyed_hash
from serving import prediction_log
from serving import services as serving
from serving.models import PredictionLog
from tests.subjects.conftest import tables_holding

pytestmark = pytest.mark.django_db

KEYS = [f"hashed-user-{i}" for i in range(40)]


@pytest.fixture
def hashing(settings):
    settings.MODELWORKS_HASH_ROUTING_KEYS = True


def test_hashed_keys_still_join_predictions_feedback_exposures_and_events(hashing, experiment, logreg):
    experiments.experiment_start(experiment=experiment)
    instance = {k: float(v) for k, v in logreg.X_test.iloc[0].items()}
    served = {key: serving.predict(model_name="cancer", payload={"instances": [instance]}, routing_key=key)
              for key in KEYS}  # fmt: skip
    prediction_log.prediction_log().flush()
    exposures.exposure_buffer().flush()
    later = timezone.now() + timedelta(seconds=1)
    feedback_record(items=[FeedbackItem(actual=1, routing_key=key, model="cancer", time=later) for key in KEYS])
    converted = KEYS[::4]
    business_events_record(items=[EventItem(key=key, name="purchase", time=later) for key in converted])

    # The clear keys are nowhere in the database: every column of every table checked.
    assert tables_holding("hashed-user") == {}
    hashed = keyed_hash(KEYS[0])
    assert PredictionLog.objects.get(routing_key=hashed).request_id == served[KEYS[0]].request_id
    # Feedback by (hashed) routing key found its prediction in the (hashed) log.
    assert Feedback.objects.get(routing_key=hashed).request_id == served[KEYS[0]].request_id
    assert Feedback.objects.filter(request_id__isnull=False).count() == len(KEYS)
    # Exposures and business events join on the same hash: the experiment counts every conversion.
    assert Exposure.objects.filter(key=hashed).count() == 1 and BusinessEvent.objects.filter(key=hashed).exists()
    arms = selectors.experiment_results(experiment)["primary"]["arms"]
    assert sum(row["n"] for row in arms) == len(KEYS)
    assert round(sum(row["mean"] * row["n"] for row in arms)) == len(converted)
    assert business_impact("cancer")[0]["keys"] == len(converted)

    out = StringIO()
    call_command("erase_subject", KEYS[0], stdout=out)
    assert "erased 4 rows" in out.getvalue()  # prediction, exposure, feedback, purchase
    assert tables_holding(hashed) == {}


def test_rows_stored_before_hashing_was_switched_on_are_erased_too(settings, experiment, logreg):
    instance = {k: float(v) for k, v in logreg.X_test.iloc[0].items()}
    serving.predict(model_name="cancer", payload={"instances": [instance]}, routing_key="hashed-user-x")
    settings.MODELWORKS_HASH_ROUTING_KEYS = True
    serving.predict(model_name="cancer", payload={"instances": [instance]}, routing_key="hashed-user-x")
    prediction_log.prediction_log().flush()
    assert sorted(PredictionLog.objects.values_list("routing_key", flat=True)) == sorted(
        ["hashed-user-x", keyed_hash("hashed-user-x")]
    )
    call_command("erase_subject", "hashed-user-x", stdout=StringIO())
    assert not PredictionLog.objects.exists()


def test_the_console_finds_rows_by_the_clear_key_people_know(hashing, client, staff, production, logreg):
    instance = {k: float(v) for k, v in logreg.X_test.iloc[0].items()}
    served = serving.predict(model_name="cancer", payload={"instances": [instance]}, routing_key="hashed-user-7")
    serving.predict(model_name="cancer", payload={"instances": [instance]}, routing_key="hashed-user-8")
    prediction_log.prediction_log().flush()
    business_events_record(items=[EventItem(key="hashed-user-7", name="purchase")])
    client.force_login(staff)
    page = client.get("/admin/serving/predictionlog/", {"q": "hashed-user-7"}).content.decode()
    assert served.request_id in page and page.count("/change/") == 1
    events = client.get("/admin/monitoring/businessevent/", {"q": "hashed-user-7"}).content.decode()
    assert keyed_hash("hashed-user-7") in events
