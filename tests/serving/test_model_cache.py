"""The per-process model cache: loads once, verifies integrity, evicts least recently used over its budget."""

from __future__ import annotations

import time

import pytest

from registry import services as registry
from registry.services import ArtifactIntegrityError
from serving.model_cache import ModelCache, ModelLoadFailed, retry_delay

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(classifier_model, logreg):
    return [
        registry.model_version_register(model=classifier_model, artifact=logreg.artifact, metrics={}) for _ in range(3)
    ]


def test_least_recently_used_models_leave_when_over_budget(versions):
    cache = ModelCache(budget_bytes=int(versions[0].size_bytes * 2.5))
    first = cache.get(versions[0])
    cache.get(versions[1])
    assert cache.get(versions[0]) is first  # a hit, and now the most recently used
    cache.get(versions[2])
    assert versions[0].pk in cache and versions[2].pk in cache and versions[1].pk not in cache


def test_a_tampered_artifact_never_enters_the_cache(versions, artifact_root):
    (artifact_root / versions[0].artifact_path).write_bytes(b"swapped")
    cache = ModelCache(budget_bytes=10**9)
    with pytest.raises(ModelLoadFailed, match="does not match the registered sha256") as failed:
        cache.get(versions[0])
    assert isinstance(failed.value.__cause__, ArtifactIntegrityError)
    assert versions[0].pk not in cache


def test_a_failed_load_is_not_tried_again_before_its_back_off_which_doubles(versions, artifact_root, settings):
    settings.MODELWORKS_MODEL_RETRY_S, settings.MODELWORKS_MODEL_RETRY_MAX_S = 0.2, 0.5
    path = artifact_root / versions[0].artifact_path
    good = path.read_bytes()
    path.unlink()
    cache = ModelCache(budget_bytes=10**9)
    attempts = []
    for pause in (0, 0, 0.25, 0.45, 0):
        time.sleep(pause)
        with pytest.raises(ModelLoadFailed, match="missing from the artifact storage") as failed:
            cache.get(versions[0])
        attempts.append(failed.value.failure.attempts)
        assert failed.value.retry_after >= 1  # whole seconds for Retry-After
    assert attempts == [1, 1, 2, 3, 3]  # tried at 0, 0.2 later, 0.4 later; the back-off is capped at 0.5
    assert [f.version for f in cache.failures()] == [versions[0].version]
    path.write_bytes(good)
    time.sleep(0.55)
    assert cache.get(versions[0]).version == versions[0].version
    assert cache.failures() == []


def test_a_changed_artifact_record_is_tried_at_once(versions, artifact_root):
    (artifact_root / versions[0].artifact_path).unlink()
    cache = ModelCache(budget_bytes=10**9)
    with pytest.raises(ModelLoadFailed):
        cache.get(versions[0])
    versions[0].artifact_path = versions[1].artifact_path  # e.g. the artifact stored again under a new name
    assert cache.get(versions[0]).version_id == versions[0].pk


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (50, 300)]
)  # fmt: skip
def test_the_back_off_starts_at_30_s_and_doubles_to_5_minutes(attempts, seconds):
    assert retry_delay(attempts) == seconds
