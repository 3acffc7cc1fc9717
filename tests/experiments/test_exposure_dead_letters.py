"""An exposure the database can never take (a key holding NUL or a lone surrogate) must not hold back the others."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from experiments import exposures
from experiments.models import Exposure
from serving import traffic
from serving.models import DeadLetter

# Any character, NUL and lone surrogates often.
KEY_CHARACTERS = st.one_of(st.sampled_from("\x00\ud800\udfffk"), st.characters(exclude_categories=[]))


def arm(name: str) -> traffic.Arm:
    return traffic.Arm(name, 1, ((0, 10_000),))


def dead_letters() -> float:
    return REGISTRY.get_sample_value("modelworks_log_dead_letters_total", {"source": "exposures"}) or 0.0


@pytest.mark.django_db
@pytest.mark.parametrize("poison", ["evil\x00key", "\ud800"], ids=["NUL", "lone surrogate"])
def test_a_poison_key_is_a_dead_letter_and_every_other_exposure_is_written(experiment, fresh_exposures, poison):
    before = dead_letters()
    for i in range(100):
        fresh_exposures.record(experiment.pk, arm("control"), f"user-{i}" if i != 40 else poison)
    assert fresh_exposures.flush() == 99 and len(fresh_exposures) == 0
    keys = set(Exposure.objects.filter(experiment=experiment).values_list("key", flat=True))
    assert keys == {f"user-{i}" for i in range(100) if i != 40}
    (letter,) = DeadLetter.objects.all()
    assert letter.source == "exposures" and json.loads(letter.payload)["key"] == poison
    assert dead_letters() == before + 1
    fresh_exposures.record(experiment.pk, arm("control"), "later")  # the flusher keeps going
    assert fresh_exposures.flush() == 1


@pytest.mark.django_db(transaction=True)
def test_exposures_are_kept_while_the_database_is_away_and_written_once_it_is_back(
    experiment, fresh_exposures, monkeypatch
):
    for i in range(20):
        fresh_exposures.record(experiment.pk, arm("forest"), f"user-{i}")
    connection.close()
    port = connection.settings_dict["PORT"]
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")  # connection refused; the shared Postgres runs on
    assert fresh_exposures.flush() == 0 and len(fresh_exposures) == 20
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", port)
    assert fresh_exposures.flush() == 20
    assert Exposure.objects.filter(experiment=experiment).count() == 20 and not DeadLetter.objects.exists()


@pytest.mark.django_db
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.text(KEY_CHARACTERS, min_size=1, max_size=12), min_size=1, max_size=40, unique=True))
def test_any_mix_of_keys_writes_exactly_the_storable_ones(experiment, keys):
    buffer = exposures.ExposureBuffer(flush_seconds=3600, max_rows=10_000)
    Exposure.objects.all().delete()
    letters = DeadLetter.objects.count()
    for key in keys:
        buffer.record(experiment.pk, arm("control"), key)
    storable = {k for k in keys if "\x00" not in k and not any("\ud800" <= c <= "\udfff" for c in k)}
    assert buffer.flush() == len(storable) and len(buffer) == 0
    assert set(Exposure.objects.values_list("key", flat=True)) == storable
    assert DeadLetter.objects.count() - letters == len(keys) - len(storable)
