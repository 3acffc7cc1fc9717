"""A skops archive that inflates to far more than its size (a zip bomb) is refused before anything unpacks it, and
untrusted uploads are first loaded in a worker process with a memory and a time limit, never in the web process."""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np
import pytest
import skops.io as sio
from django.core.exceptions import ValidationError

from registry import artifacts, services
from registry.models import ModelVersion
from tests.conftest import upload

pytestmark = pytest.mark.django_db

ZEROS = 134_217_728  # float64s: 1 GiB unpacked, about 1 MB deflated (the issue's file)


def skops_bomb(count: int) -> bytes:
    """What `sio.dumps(np.zeros(count), compression=ZIP_DEFLATED)` writes, made without holding the array."""
    template = zipfile.ZipFile(io.BytesIO(sio.dumps(np.zeros(1), compression=zipfile.ZIP_DEFLATED)))
    (array,) = [name for name in template.namelist() if name.endswith(".npy")]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("schema.json", template.read("schema.json"))
        with bomb.open(array, "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(1 << 24)
            for _ in range(count * 8 // len(chunk)):
                member.write(chunk)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return skops_bomb(ZEROS)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class PeakRss:
    """The highest resident set size of this process seen while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRss:
        self.before = self.peak = rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 2**20


def test_the_issues_bomb_is_refused_by_its_declared_size_without_the_web_process_growing(api, classifier_model, bomb):
    assert len(bomb) < 1.2 * 2**20
    with PeakRss() as rss:
        response = api.post("/api/v1/models/cancer/versions/", {"artifact": upload(bomb)}, format="multipart")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["artifact"])
    assert "unpacks to" in message and "MODELWORKS_MAX_ARTIFACT_UNPACKED_MB" in message, message
    assert rss.growth_mb < 50, f"the test process grew by {rss.growth_mb:.0f} MB"
    assert ModelVersion.objects.count() == 0


def test_a_bomb_under_the_size_limit_runs_out_of_the_workers_memory_not_the_web_processs(
    api, classifier_model, settings
):
    small = skops_bomb(ZEROS // 4)  # 256 MiB unpacked
    settings.MODELWORKS_MAX_ARTIFACT_UNPACKED_MB = 1024
    settings.MODELWORKS_ARTIFACT_CHECK_MEMORY_MB = 100
    with PeakRss() as rss:
        response = api.post("/api/v1/models/cancer/versions/", {"artifact": upload(small)}, format="multipart")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["artifact"])
    assert "more than 100 MB of memory" in message and "MODELWORKS_ARTIFACT_CHECK_MEMORY_MB" in message, message
    assert rss.growth_mb < 50, f"the test process grew by {rss.growth_mb:.0f} MB"


def test_an_artifact_that_takes_too_long_to_load_is_refused(classifier_model, forest, settings):
    settings.MODELWORKS_ARTIFACT_CHECK_SECONDS = 0.001  # no worker loads a forest that fast
    with pytest.raises(ValidationError, match="longer than 0.001 s to load"):
        services.model_version_register(model=classifier_model, artifact=forest.artifact)
    assert ModelVersion.objects.count() == 0


def test_a_legitimate_model_still_registers_and_predicts(classifier_model, forest):
    version = services.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    assert version.status == "validated"
    loaded = services.model_version_load(version)
    assert (loaded.predict(forest.X_test) == forest.estimator.predict(forest.X_test)).all()


def test_a_stored_bomb_is_refused_at_load_time_too(bomb):
    with pytest.raises(artifacts.ArtifactError, match="unpacks to"):
        artifacts.load_model(bomb, "skops")


def test_an_archive_within_the_limits_that_holds_no_model_never_loads_in_the_web_process(api, classifier_model):
    array = skops_bomb(ZEROS // 8)  # 128 MiB of zeros: within both limits, and not a model
    with PeakRss() as rss:
        response = api.post("/api/v1/models/cancer/versions/", {"artifact": upload(array)}, format="multipart")
    assert response.status_code == 400, response.content
    assert "ndarray, which cannot predict" in " ".join(response.json()["artifact"])
    assert rss.growth_mb < 50, f"the test process grew by {rss.growth_mb:.0f} MB"
