"""The per-process model cache: loads once, verifies integrity, evicts least recently used over its budget."""

from __future__ import annotations

import pytest

from registry import services as registry
from registry.services import ArtifactIntegrityError
from serving.model_cache import ModelCache

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
    with pytest.raises(ArtifactIntegrityError):
        cache.get(versions[0])
    assert versions[0].pk not in cache
