"""Making a version cheaper to serve: its ONNX conversion (checked for parity, measured against the original, served
with the faster runtime), the runtime override, and a dynamically quantised candidate version.

The slow parts (converting, checking, timing) run outside any transaction; what they found is written under the
model's row lock, as every registry change is. A conversion that fails parity stores no artifact and never serves.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from registry import artifacts, evaluation, onnx_tools, permissions
from registry.locking import lock_model, retry_on_conflict
from registry.models import ArtifactFormat, ModelVersion, Runtime, Task
from registry.services import (
    Derivation,
    _event,
    artifact_storage,
    model_version_load,
    model_version_read_artifact,
    model_version_register,
    queue_onnx_conversion,
)

logger = logging.getLogger(__name__)

QUANTISATION = "onnx dynamic quantisation (int8 weights)"
# What a quantised candidate must keep besides the model's own gates: its parent's quality, within half a point.
DELTA_RULES = {Task.CLASSIFICATION: "accuracy >= parent - 0.005", Task.REGRESSION: "r2 >= parent - 0.005"}


def _evaluation_matrix(version: ModelVersion) -> np.ndarray:
    if not version.evaluation_data_path:
        raise onnx_tools.ConversionError("no evaluation data: parity is checked on the evaluation set")
    with artifact_storage().open(version.evaluation_data_path, "rb") as handle:
        X, _ = evaluation.read_evaluation_csv(handle.read(), _target_column(version), 10**9)
    try:
        frame = evaluation.features_for(X, version.signature)
        return frame.to_numpy(dtype=float)
    except (evaluation.EvaluationDataError, ValueError) as exc:
        raise onnx_tools.ConversionError(f"the evaluation data cannot be used: {exc}") from None


def _target_column(version: ModelVersion) -> str:
    """The evaluation CSV's target: the one column it has beyond the signature's inputs."""
    with artifact_storage().open(version.evaluation_data_path, "rb") as handle:
        header = handle.readline().decode().strip().split(",")
    inputs = {f["name"] for f in version.signature["inputs"]}
    extra = [name for name in header if name not in inputs]
    return extra[0] if extra else "target"


def _numeric_only(version: ModelVersion) -> None:
    categorical = [f["name"] for f in version.signature["inputs"] if f["dtype"] == "category"]
    if categorical:
        raise onnx_tools.ConversionError(
            "only models with numeric features convert (one float tensor): " + ", ".join(categorical[:5])
        )


def model_version_request_onnx(*, version: ModelVersion, actor: Any = None) -> ModelVersion:
    """Mark the version's conversion pending and queue it on a worker (the API's and the client's way)."""
    permissions.check(actor, permissions.WRITE, version.model)
    _convertible(version)
    with transaction.atomic():
        lock_model(version.model_id)
        ModelVersion.objects.filter(pk=version.pk).update(
            onnx_conversion={"status": "pending", "requested_at": timezone.now().isoformat()}
        )
        transaction.on_commit(lambda: queue_onnx_conversion(version.pk))
    version.refresh_from_db()
    return version


def _convertible(version: ModelVersion) -> None:
    if version.format == ArtifactFormat.ONNX:
        raise ValidationError({"version": [f"{version} is an ONNX artifact already: it is served by onnxruntime"]})
    if not version.servable:
        raise ValidationError({"version": [f"{version} cannot be served (rejected or tampered): nothing to convert"]})


def model_version_convert_onnx(*, version: ModelVersion, actor: Any = None) -> ModelVersion:
    """Convert the version with skl2onnx, check parity on its evaluation set, measure both runtimes at 1 and 64
    rows and record it all; the ONNX artifact is stored (with its own sha256) only when parity holds, and the version
    then serves with the faster runtime unless its override says otherwise. Failures are recorded, not raised."""
    permissions.check(actor, permissions.WRITE, version.model)
    _convertible(version)
    started = timezone.now()
    report: dict[str, Any] = {"requested_at": version.onnx_conversion.get("requested_at", started.isoformat())}
    onnx_bytes = b""
    try:
        _numeric_only(version)
        original = model_version_load(version)
        X = _evaluation_matrix(version)
        onnx_bytes = onnx_tools.convert(original, len(version.signature["inputs"]))
        converted = artifacts.load_model(onnx_bytes, ArtifactFormat.ONNX)
        check = onnx_tools.parity(original, converted, X, version.model.task)
        report["parity"] = check.report
        if check.passed:
            latencies = {
                Runtime.SKLEARN.value: onnx_tools.latency_ms(original, X, version.model.task),
                Runtime.ONNX.value: onnx_tools.latency_ms(converted, X, version.model.task),
            }
            report["latency_ms"] = latencies
            report["chosen"], report["reason"] = onnx_tools.faster(latencies)
            report["status"] = "converted"
        else:
            report.update(status="parity_failed", error=check.reason)
    except (onnx_tools.ConversionError, artifacts.ArtifactError) as exc:
        report.update(status="failed", error=str(exc))
    except Exception as exc:  # a model skl2onnx half-converts can fail anywhere; recorded, never served
        logger.exception("ONNX conversion of %s failed", version)
        report.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    report.update(
        finished_at=timezone.now().isoformat(),
        seconds=round((timezone.now() - started).total_seconds(), 3),
        providers=onnx_tools.providers(),
        library_versions=onnx_tools.library_versions(),
    )
    return _record_conversion(version, report, onnx_bytes if report["status"] == "converted" else b"", actor)


@retry_on_conflict
def _record_conversion(version: ModelVersion, report: dict[str, Any], onnx_bytes: bytes, actor: Any) -> ModelVersion:
    storage = artifact_storage()
    path = ""
    if onnx_bytes:
        stem = version.artifact_path.rsplit("/", 1)[0]
        path = storage.save(f"{stem}/converted-{uuid.uuid4().hex[:8]}.onnx", ContentFile(onnx_bytes))
        report["size_bytes"] = {Runtime.SKLEARN.value: version.size_bytes, Runtime.ONNX.value: len(onnx_bytes)}
    try:
        with transaction.atomic():
            lock_model(version.model_id)
            locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
            old_path = locked.onnx_artifact_path
            locked.onnx_conversion = report
            locked.onnx_artifact_path = path
            locked.onnx_sha256 = artifacts.sha256_of(onnx_bytes) if onnx_bytes else ""
            locked.onnx_size_bytes = len(onnx_bytes) if onnx_bytes else None
            if not onnx_bytes and locked.runtime_override == Runtime.ONNX:
                locked.runtime_override = ""  # nothing to override with any more
            before = locked.runtime
            locked.runtime = _runtime_of(locked)
            locked.save(update_fields=["onnx_conversion", "onnx_artifact_path", "onnx_sha256", "onnx_size_bytes",
                                       "runtime_override", "runtime"])  # fmt: skip
            converted = report["status"] == "converted"
            _event(
                model=locked.model,
                version=locked,
                actor=actor,
                action="version.onnx_converted" if converted else "version.onnx_refused",
                before={"runtime": before},
                after={"status": report["status"], "runtime": locked.runtime, "sha256": locked.onnx_sha256 or None},
                message=report.get("reason", "") if converted else report.get("error", ""),
            )
            if old_path and old_path != path:
                transaction.on_commit(lambda: storage.delete(old_path))
    except BaseException:
        if path:
            storage.delete(path)
        raise
    return locked


def _runtime_of(version: ModelVersion) -> str:
    if version.format == ArtifactFormat.ONNX:
        return Runtime.ONNX
    if not version.onnx_sha256:
        return Runtime.SKLEARN
    return version.runtime_override or version.onnx_conversion.get("chosen") or Runtime.SKLEARN


@retry_on_conflict
@transaction.atomic
def model_version_set_runtime(*, version: ModelVersion, runtime: str, actor: Any = None) -> ModelVersion:
    """Override the measured choice ("sklearn" or "onnx"), or go back to it (""). ONNX needs a conversion that
    passed parity; an ONNX artifact has no other runtime."""
    lock_model(version.model_id)
    permissions.check(actor, permissions.WRITE, version.model)
    locked = ModelVersion.objects.select_for_update().select_related("model").get(pk=version.pk)
    if runtime not in ("", *Runtime.values):
        raise ValidationError({"runtime": [f"must be one of {', '.join(Runtime.values)}, or empty for the measured"]})
    if runtime == Runtime.ONNX and not locked.onnx_sha256 and locked.format != ArtifactFormat.ONNX:
        status = locked.onnx_conversion.get("status", "not requested")
        raise ValidationError(
            {"runtime": [f"{locked} has no ONNX conversion that passed parity (conversion: {status})"]}
        )
    if runtime == Runtime.SKLEARN and locked.format == ArtifactFormat.ONNX:
        raise ValidationError({"runtime": [f"{locked} is an ONNX artifact: onnxruntime is its only runtime"]})
    before = {"runtime": locked.runtime, "override": locked.runtime_override}
    locked.runtime_override = runtime
    locked.runtime = _runtime_of(locked)
    locked.save(update_fields=["runtime_override", "runtime"])
    after = {"runtime": locked.runtime, "override": locked.runtime_override}
    if after != before:
        _event(model=locked.model, version=locked, action="version.runtime_changed", actor=actor, before=before,
               after=after)  # fmt: skip
    return locked


def _onnx_source(version: ModelVersion) -> bytes:
    if version.format == ArtifactFormat.ONNX:
        return model_version_read_artifact(version)
    if version.onnx_sha256:
        return model_version_read_artifact(version, Runtime.ONNX)
    status = version.onnx_conversion.get("status", "not requested")
    raise ValidationError({"version": [f"{version} has no ONNX conversion that passed parity (conversion: {status});"
                                       " convert it first"]})  # fmt: skip


def model_version_quantize(*, version: ModelVersion, actor: Any = None) -> ModelVersion:
    """A new candidate version: the version's ONNX model with int8 weights (onnxruntime's dynamic quantisation),
    registered through the same gates plus DELTA_RULES against the parent, its size and latency side by side with the
    parent's in its gate report."""
    permissions.check(actor, permissions.WRITE, version.model)
    source = _onnx_source(version)
    if not version.evaluation_data_path:
        raise ValidationError({"version": [f"{version} has no evaluation data: a quantised candidate is judged on it"]})
    try:
        quantised = onnx_tools.quantise(source)
        X = _evaluation_matrix(version)
        task = version.model.task
        parent_model = model_version_load(version, version.runtime)
        candidate = artifacts.load_model(quantised, ArtifactFormat.ONNX)
        comparison = {
            "size_bytes": {"parent": version.onnx_size_bytes or version.size_bytes, "candidate": len(quantised),
                           "parent_original": version.size_bytes},
            "latency_ms": {"parent": onnx_tools.latency_ms(parent_model, X, task),
                           "candidate": onnx_tools.latency_ms(candidate, X, task)},
            "parent_runtime": version.runtime,
        }  # fmt: skip
    except onnx_tools.ConversionError as exc:
        raise ValidationError({"version": [str(exc)]}) from None
    with artifact_storage().open(version.evaluation_data_path, "rb") as handle:
        evaluation_data = handle.read()
    derivation = Derivation(parent=version, how=QUANTISATION, rules=(DELTA_RULES[task],), comparison=comparison)
    return model_version_register(
        model=version.model,
        artifact=quantised,
        filename="quantised.onnx",
        fmt=ArtifactFormat.ONNX,
        signature=version.signature,
        params=version.params,
        tags={**version.tags, "optimisation": "quantised"},
        evaluation_data=evaluation_data,
        target_column=_target_column(version),
        actor=actor,
        convert_onnx=False,
        derivation=derivation,
    )
