"""The registry's business logic: the one place that writes registry rows and artifacts.

Functions are named <entity>_<action>, take keyword arguments and raise django's ValidationError with
field-level messages on bad input, having stored nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from config.storable import check_storable
from registry import artifacts, audit, evaluation, gates, permissions
from registry.locking import lock_model, retry_on_conflict
from registry.models import (
    ALIAS_NAME,
    ArtifactFormat,
    GrantPermission,
    ModelAlias,
    ModelGrant,
    ModelVersion,
    RegisteredModel,
    RegistryEvent,
    Runtime,
    Task,
    VersionStatus,
)
from registry.signature import check_model_matches, infer_signature, model_classes, validate_signature
from registry.traffic import TrafficConflict, traffic_owner
from registry.webhooks import events as webhook_events
from registry.webhooks import services as webhooks

logger = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"


class ArtifactIntegrityError(Exception):
    """The stored artifact no longer has the sha256 recorded at registration: it is refused."""


def artifact_storage():
    return storages["artifacts"]


def _actor_name(actor: Any) -> str:
    return getattr(actor, "username", "") or "system"


def _event(
    *,
    model: RegisteredModel,
    action: str,
    actor: Any = None,
    version: ModelVersion | None = None,
    before: Any = None,
    after: Any = None,
    message: str = "",
) -> RegistryEvent:
    event = RegistryEvent.objects.create(
        model=model,
        version=version,
        action=action,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=_actor_name(actor),
        before=before,
        after=after,
        message=message,
    )
    if action in webhook_events.event_types():
        webhooks.webhook_event_fire(
            event_type=action, model=model,
            data={"version": version.version if version else None, "actor": event.actor_name, "before": before,
                  "after": after, "message": message, "event_id": event.pk},
        )  # fmt: skip
    return event


def registry_event_record(
    *,
    model: RegisteredModel,
    action: str,
    version: ModelVersion | None = None,
    actor: Any = None,
    after: Any = None,
    message: str = "",
) -> RegistryEvent:
    """An entry in the model's event log written by an app above the registry (a batch job's summary, say)."""
    return _event(model=model, action=action, version=version, actor=actor, after=after, message=message)


def _json_object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError({field: ["must be a JSON object"]})
    return value


# --- Registered models ----------------------------------------------------------------------------------------------


@retry_on_conflict
@transaction.atomic
def registered_model_create(
    *,
    name: str,
    task: str,
    description: str = "",
    tags: dict[str, Any] | None = None,
    gate_rules: list[str] | None = None,
    convert_onnx: bool = False,
    owner: Any = None,
    actor: Any = None,
) -> RegisteredModel:
    permissions.check(actor, permissions.WRITE)
    check_storable(name=name, description=description, tags=tags, gate_rules=gate_rules)
    errors: dict[str, list[str]] = {}
    if not name or slugify(name) != name:
        errors["name"] = ["must be a slug: lowercase letters, digits, '-' or '_'"]
    elif RegisteredModel.objects.filter(name=name).exists():
        errors["name"] = [f"a model named '{name}' already exists"]
    if task not in Task.values:
        errors["task"] = [f"must be one of {', '.join(Task.values)}"]
    rule_errors = gates.rule_problems(gate_rules or [])
    if rule_errors:
        errors["gate_rules"] = rule_errors
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                name=name,
                task=task,
                description=description,
                tags=_json_object(tags, "tags"),
                gate_rules=list(gate_rules or []),
                convert_onnx=bool(convert_onnx),
                owner=owner if getattr(owner, "pk", None) else None,
            )
    except IntegrityError:
        raise ValidationError({"name": [f"a model named '{name}' already exists"]}) from None
    _event(model=model, action="model.created", actor=actor, after=_model_snapshot(model))
    return model


@retry_on_conflict
@transaction.atomic
def registered_model_update(
    *,
    model: RegisteredModel,
    actor: Any = None,
    description: str | None = None,
    tags: dict[str, Any] | None = None,
    gate_rules: list[str] | None = None,
    protected_aliases: list[str] | None = None,
    convert_onnx: bool | None = None,
) -> RegisteredModel:
    check_storable(description=description, tags=tags, gate_rules=gate_rules, protected_aliases=protected_aliases)
    model = lock_model(model.pk)
    permissions.check(actor, permissions.WRITE, model)
    before = _model_snapshot(model)
    if protected_aliases is not None:
        model.protected_aliases = _checked_protected_aliases(model, protected_aliases, actor)
    if gate_rules is not None:
        problems = gates.rule_problems(gate_rules)
        if problems:
            raise ValidationError({"gate_rules": problems})
        model.gate_rules = list(gate_rules)
    if description is not None:
        model.description = description
    if tags is not None:
        model.tags = _json_object(tags, "tags")
    if convert_onnx is not None:
        model.convert_onnx = bool(convert_onnx)
    model.save()
    after = _model_snapshot(model)
    if after != before:
        _event(model=model, action="model.updated", actor=actor, before=before, after=after)
    return model


def _model_snapshot(model: RegisteredModel) -> dict[str, Any]:
    return {
        "description": model.description,
        "tags": model.tags,
        "gate_rules": model.gate_rules,
        "task": model.task,
        "protected_aliases": model.protected_aliases,
        "convert_onnx": model.convert_onnx,
    }


def _checked_protected_aliases(model: RegisteredModel, names: Any, actor: Any) -> list[str]:
    """Which aliases need deploy: changing the list needs deploy itself (or it would be a way round it), and
    production is always among them."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValidationError({"protected_aliases": ["a list of alias names"]})
    problems = []
    for name in names:
        try:
            ALIAS_NAME(name)
        except ValidationError as exc:
            problems.append(f"'{name}': {' '.join(exc.messages)}")
    if PRODUCTION_ALIAS not in names:
        problems.append(f"'{PRODUCTION_ALIAS}' is always protected")
    if problems:
        raise ValidationError({"protected_aliases": problems})
    cleaned = sorted(set(names))
    if cleaned != sorted(model.protected_aliases or []):
        permissions.check(actor, permissions.DEPLOY, model)
    return cleaned


# --- Versions -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derivation:
    """A version made from another one (quantised, distilled). Its gates may compare with the parent's metrics
    ("accuracy >= parent - 0.005"), `rules` judge it besides the model's own, its lineage names the parent, and its
    gate report carries `comparison` (size, latency and metrics side by side with the parent)."""

    parent: ModelVersion
    how: str
    rules: tuple[str, ...] = ()
    comparison: dict[str, Any] = field(default_factory=dict)

    @property
    def parent_metrics(self) -> dict[str, float]:
        return self.parent.gate_report.get("metrics") or self.parent.metrics

    def lineage(self) -> dict[str, Any]:
        return {"parent": {"version": self.parent.version, "sha256": self.parent.sha256}, "derivation": self.how}


def model_version_register(
    *,
    model: RegisteredModel,
    artifact: bytes,
    filename: str = "",
    fmt: str | None = None,
    signature: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    library_versions: dict[str, Any] | None = None,
    evaluation_data: bytes | None = None,
    target_column: str = "target",
    actor: Any = None,
    convert_onnx: bool | None = None,
    derivation: Derivation | None = None,
) -> ModelVersion:
    """Check an artifact end to end, store it, give it the next version number and run the quality gates.

    Everything that can fail is checked before anything is written; the database rows are written in one
    transaction, and the stored files are removed again if that transaction fails. `convert_onnx` (default: the
    model's setting) queues its ONNX conversion once the version is committed (registry/optimisation.py).
    """
    permissions.check(actor, permissions.WRITE, model)
    check_storable(
        signature=signature, metrics=metrics, params=params, tags=tags, lineage=lineage,
        library_versions=library_versions, target_column=target_column,
    )  # fmt: skip
    loaded, fmt, signature, eval_frame = _checked_artifact(
        model=model,
        artifact=artifact,
        filename=filename,
        fmt=fmt,
        signature=signature,
        evaluation_data=evaluation_data,
        target_column=target_column,
    )
    submitted = _submitted_metrics(metrics)
    computed = None
    if eval_frame is not None:
        X, y = eval_frame
        try:
            computed = evaluation.compute_metrics(loaded, evaluation.features_for(X, signature), y, model.task)
        except evaluation.EvaluationDataError as exc:
            raise ValidationError({"evaluation_data": [str(exc)]}) from None
    digest = artifacts.sha256_of(artifact)
    versions = {
        **artifacts.recorded_library_versions(artifact, fmt),
        **_json_object(library_versions, "library_versions"),
    }
    extras = {
        "params": _json_object(params, "params"),
        "tags": _json_object(tags, "tags"),
        "lineage": {**_json_object(lineage, "lineage"), **(derivation.lineage() if derivation else {})},
    }
    extras["runtime"] = Runtime.ONNX if fmt == ArtifactFormat.ONNX else Runtime.SKLEARN
    convert = model.convert_onnx if convert_onnx is None else bool(convert_onnx)
    if convert and fmt != ArtifactFormat.ONNX:
        extras["onnx_conversion"] = (
            {"status": "pending", "requested_at": timezone.now().isoformat()}
            if eval_frame is not None
            else {"status": "failed", "error": "no evaluation data: parity is checked on the evaluation set"}
        )

    storage = artifact_storage()
    stem = f"models/{model.name}/{uuid.uuid4().hex}"
    artifact_path = storage.save(f"{stem}/model.{fmt}", ContentFile(artifact))
    eval_path = storage.save(f"{stem}/evaluation.csv", ContentFile(evaluation_data)) if eval_frame is not None else ""
    try:
        with transaction.atomic():
            # The row lock on the model serialises concurrent registrations, so version numbers never collide.
            locked = lock_model(model.pk)
            last = locked.versions.order_by("-version").values_list("version", flat=True).first() or 0
            production_metrics = _production_metrics(locked)
            report = _gate_report(locked, submitted, computed, production_metrics, derivation)
            version = ModelVersion.objects.create(
                model=locked,
                version=last + 1,
                artifact_path=artifact_path,
                sha256=digest,
                size_bytes=len(artifact),
                format=fmt,
                library_versions=versions,
                signature=signature,
                metrics=submitted,
                evaluation_data_path=eval_path,
                status=report["outcome"],
                gate_report=report,
                created_by=actor if getattr(actor, "pk", None) else None,
                **extras,
            )
            _event(
                model=locked,
                version=version,
                action="version.registered",
                actor=actor,
                after={"version": version.version, "sha256": digest, "format": fmt, "status": version.status},
            )
            _event(
                model=locked,
                version=version,
                action=f"version.{report['outcome']}",
                actor=actor,
                after={
                    "status": version.status,
                    "failed": [r["rule"] for r in report["rules"] if not r["passed"]],
                },
                message="; ".join(r["reason"] for r in report["rules"] if not r["passed"]),
            )
            if version.onnx_conversion.get("status") == "pending":
                transaction.on_commit(lambda pk=version.pk: queue_onnx_conversion(pk))
    except BaseException:
        for path in (artifact_path, eval_path):
            if path:
                storage.delete(path)
        raise
    return version


def _checked_artifact(
    *,
    model: RegisteredModel,
    artifact: bytes,
    filename: str,
    fmt: str | None,
    signature: dict[str, Any] | None,
    evaluation_data: bytes | None,
    target_column: str,
):
    limit = settings.MODELWORKS_MAX_ARTIFACT_MB * 1024 * 1024
    if not artifact:
        raise ValidationError({"artifact": ["the file is empty"]})
    if len(artifact) > limit:
        raise ValidationError(
            {"artifact": [f"the file is {len(artifact)} bytes; the limit is {settings.MODELWORKS_MAX_ARTIFACT_MB} MB"]}
        )
    if fmt and fmt not in ArtifactFormat.values:
        raise ValidationError({"format": [f"unknown format '{fmt}': use {', '.join(ArtifactFormat.values)}"]})
    try:
        fmt = fmt or artifacts.detect_format(artifact, filename)
        artifacts.vet_untrusted(artifact, fmt)  # first in a worker process with memory and time limits
        loaded = artifacts.load_model(artifact, fmt)
    except artifacts.ArtifactError as exc:
        raise ValidationError({"artifact": [str(exc)]}) from None
    if not hasattr(loaded, "predict"):
        raise ValidationError({"artifact": [f"the artifact holds a {type(loaded).__name__}, which cannot predict"]})

    eval_frame = None
    if evaluation_data is not None:
        try:
            eval_frame = evaluation.read_evaluation_csv(
                evaluation_data, target_column, settings.MODELWORKS_MAX_EVAL_ROWS
            )
        except evaluation.EvaluationDataError as exc:
            raise ValidationError({"evaluation_data": [str(exc)]}) from None

    if signature is None:
        signature, problems = infer_signature(loaded, model.task, eval_frame[0] if eval_frame else None)
    else:
        signature, problems = validate_signature(signature)
    if problems:
        raise ValidationError({"signature": problems})
    mismatch = check_model_matches(signature, loaded, model.task)
    if mismatch:
        raise ValidationError({"signature": mismatch})
    if model.task == Task.CLASSIFICATION and "classes" not in signature["outputs"]:
        signature["outputs"]["classes"] = model_classes(loaded)
    return loaded, fmt, signature, eval_frame


def _submitted_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    metrics = _json_object(metrics, "metrics")
    bad = [name for name, value in metrics.items() if isinstance(value, bool) or not isinstance(value, int | float)]
    if bad:
        raise ValidationError({"metrics": [f"'{name}' must be a number" for name in bad]})
    return {name: float(value) for name, value in metrics.items()}


def _production_metrics(model: RegisteredModel) -> dict[str, float] | None:
    alias = ModelAlias.objects.filter(model=model, name=PRODUCTION_ALIAS).select_related("version").first()
    if alias is None:
        return None
    return alias.version.gate_report.get("metrics") or alias.version.metrics


def queue_onnx_conversion(version_id: int) -> None:
    """Queue the version's ONNX conversion on a worker; a broker that is down records that on the version."""
    from config.queueing import enqueue
    from registry.tasks import convert_onnx  # tasks import services: import here, not at module level

    try:
        enqueue(convert_onnx, version_id)
    except Exception as exc:
        logger.exception("could not queue the ONNX conversion of version id %s", version_id)
        ModelVersion.objects.filter(pk=version_id).update(
            onnx_conversion={"status": "failed", "error": f"not queued ({type(exc).__name__}): convert it again"}
        )


def _gate_report(
    model: RegisteredModel,
    submitted: dict[str, float],
    computed: dict[str, float] | None,
    production_metrics: dict[str, float] | None,
    derivation: Derivation | None = None,
    *,
    extra_rules: list[str] | None = None,
    parent_metrics: dict[str, float] | None = None,
    comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The gates' verdict. A derived version (or a re-run of one: extra_rules, parent_metrics and comparison from
    its previous report) is judged by its derivation's rules too, against its parent's metrics."""
    if derivation is not None:
        extra_rules, parent_metrics = list(derivation.rules), derivation.parent_metrics
        comparison = derivation.comparison
    if computed is not None:
        used, source = computed, "computed"
        note = "metrics computed by the platform from the evaluation dataset"
    else:
        used, source = submitted, "submitted"
        note = "no evaluation dataset: the gates used the metrics submitted with the version, unverified"
    rules = [*model.gate_rules, *[rule for rule in extra_rules or [] if rule not in model.gate_rules]]
    verdict = gates.evaluate(rules, used, production_metrics, parent_metrics)
    if not rules:
        note += "; no quality gates are configured for this model"
    derived = {}
    if parent_metrics is not None:
        derived = {"extra_rules": list(extra_rules or []), "parent_metrics": parent_metrics,
                   "comparison": comparison or {}}  # fmt: skip
    return {
        "outcome": verdict["outcome"],
        "metrics_source": source,
        "note": note,
        "metrics": used,
        "submitted_metrics": submitted,
        "rules": verdict["rules"],
        "production_metrics": production_metrics,
        **derived,
        "evaluated_at": timezone.now().isoformat(),
    }


def _converted(version: ModelVersion, runtime: str | None) -> bool:
    """Whether `runtime` means the version's ONNX conversion rather than its own artifact."""
    return runtime == Runtime.ONNX and version.format != ArtifactFormat.ONNX


def model_version_read_artifact(version: ModelVersion, runtime: str | None = None) -> bytes:
    """The artifact's bytes (its ONNX conversion's for runtime="onnx"), verified against the recorded sha256; a
    mismatch marks the version and refuses."""
    converted = _converted(version, runtime)
    if converted and not version.onnx_sha256:
        raise artifacts.ArtifactError(f"{version} has no ONNX conversion that passed parity")
    path, expected = (version.onnx_artifact_path, version.onnx_sha256) if converted else (
        version.artifact_path, version.sha256)  # fmt: skip
    with artifact_storage().open(path, "rb") as handle:
        data = handle.read()
    actual = artifacts.sha256_of(data)
    if actual != expected:
        _mark_tampered(version=version, actual=actual)
        what = "ONNX conversion" if converted else "artifact"
        raise ArtifactIntegrityError(f"{version}: {what} sha256 is {actual}, registered {expected}; refusing to load")
    return data


def model_version_load(version: ModelVersion, runtime: str | None = None) -> Any:
    """The version's model, ready to predict, after the integrity check: its own artifact, or for runtime="onnx"
    its ONNX conversion."""
    fmt = ArtifactFormat.ONNX if _converted(version, runtime) else version.format
    return artifacts.load_model(model_version_read_artifact(version, runtime), fmt)


def model_version_verify_integrity(*, version: ModelVersion) -> bool:
    try:
        model_version_read_artifact(version)
        if version.onnx_sha256:
            model_version_read_artifact(version, Runtime.ONNX)
    except ArtifactIntegrityError:
        return False
    except FileNotFoundError:
        _mark_tampered(version=version, actual="missing")
        return False
    return True


def _mark_tampered(*, version: ModelVersion, actual: str) -> None:
    with transaction.atomic():
        lock_model(version.model_id)
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if locked.integrity_failed_at is None:
            locked.integrity_failed_at = timezone.now()
            locked.save(update_fields=["integrity_failed_at"])
            _event(
                model=locked.model,
                version=locked,
                action="version.integrity_failed",
                before={"sha256": locked.sha256},
                after={"sha256": actual},
                message="the stored artifact does not match its registered sha256; it will not be loaded",
            )
        version.integrity_failed_at = locked.integrity_failed_at
    logger.error("artifact integrity check failed for %s (sha256 now %s)", version, actual)


@retry_on_conflict
@transaction.atomic
def model_version_archive(*, version: ModelVersion, actor: Any = None) -> ModelVersion:
    """Take a version out of traffic for good. Refused (409) while anything routes to it: an alias, or the rollout or
    experiment holding the model's traffic (its candidate, baseline or arms), so the archived status never lies."""
    lock_model(version.model_id)
    permissions.check(actor, permissions.WRITE, version.model)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    aliases = list(locked.aliases.values_list("name", flat=True))
    if aliases:
        raise TrafficConflict(
            f"aliases {', '.join(aliases)} point at this version: move them before archiving", field="version"
        )
    owner = traffic_owner(locked.model_id)
    if owner is not None and locked.pk in owner.version_ids:
        raise TrafficConflict(
            f"{owner} routes traffic to v{locked.version}: {owner.way_out}", field="version", owner=owner
        )
    if locked.status == VersionStatus.ARCHIVED:
        return locked
    before = locked.status
    locked.status = VersionStatus.ARCHIVED
    locked.save(update_fields=["status"])
    _event(
        model=locked.model,
        version=locked,
        action="version.archived",
        actor=actor,
        before={"status": before},
        after={"status": locked.status},
    )
    return locked


@retry_on_conflict
@transaction.atomic
def model_version_set_status(*, version: ModelVersion, status: str, actor: Any = None, message: str = "") -> None:
    """A status change made by a rollout or a rollback (canary, rolled_back), recorded as an event with its reason."""
    lock_model(version.model_id)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.status == status:
        return
    before = locked.status
    locked.status = status
    locked.save(update_fields=["status"])
    version.status = status
    _event(
        model=locked.model,
        version=locked,
        action="version.status_changed",
        actor=actor,
        before={"status": before},
        after={"status": status},
        message=message,
    )


# Versions whose status the gates still decide: the others are in traffic or out of it for good.
_GATED = (VersionStatus.REGISTERED, VersionStatus.VALIDATED, VersionStatus.REJECTED)


@retry_on_conflict
@transaction.atomic
def model_version_rerun_gates(*, version: ModelVersion, actor: Any = None) -> ModelVersion:
    """Judge a version again by its model's current gate rules (after they changed) and the current production
    version's metrics: a new gate report, the status it decides (validated or rejected) and a `version.gates_rerun`
    event with the verdict before and after. The metrics are the ones the gates used at registration (computed from
    its evaluation data, or submitted). Refused for versions in traffic or out of it (production, canary, archived,
    rolled back): the gates no longer decide their status."""
    locked_model = lock_model(version.model_id)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.status not in _GATED:
        raise ValidationError(
            {"version": [f"{locked} is {locked.status}: gates are re-run only on registered, validated or rejected"
                         " versions"]}
        )  # fmt: skip
    previous = locked.gate_report or {}
    computed = previous.get("metrics") if previous.get("metrics_source") == "computed" else None
    submitted = previous.get("submitted_metrics", locked.metrics) or {}
    report = _gate_report(
        locked_model, submitted, computed, _production_metrics(locked_model),
        extra_rules=previous.get("extra_rules"), parent_metrics=previous.get("parent_metrics"),
        comparison=previous.get("comparison"),
    )  # fmt: skip
    before = {"status": locked.status, "failed": [r["rule"] for r in previous.get("rules", []) if not r["passed"]]}
    locked.gate_report, locked.status = report, report["outcome"]
    locked.save(update_fields=["gate_report", "status"])
    _event(
        model=locked_model,
        version=locked,
        action="version.gates_rerun",
        actor=actor,
        before=before,
        after={"status": locked.status, "failed": [r["rule"] for r in report["rules"] if not r["passed"]],
               "rules": list(locked_model.gate_rules)},
        message="; ".join(r["reason"] for r in report["rules"] if not r["passed"]),
    )  # fmt: skip
    return locked


# --- Aliases --------------------------------------------------------------------------------------------------------


# Out of traffic: only the production alias may point at them again (which makes them production again).
_OUT_OF_TRAFFIC = (VersionStatus.ROLLED_BACK, VersionStatus.ARCHIVED)


def _check_alias_target(model: RegisteredModel, name: str, version: ModelVersion) -> ModelVersion:
    """The version, its status re-read under the model's row lock (which every status change takes), once it may
    carry the alias; a 400 naming the field otherwise."""
    errors: dict[str, list[str]] = {}
    version.refresh_from_db(fields=["status", "integrity_failed_at"])
    try:
        ALIAS_NAME(name)
    except ValidationError as exc:
        errors["alias"] = exc.messages
    if version.model_id != model.pk:
        errors["version"] = [f"version {version.version} belongs to another model"]
    elif version.status == VersionStatus.REJECTED:
        errors["version"] = [f"version {version.version} was rejected by its quality gates and cannot get traffic"]
    elif version.integrity_failed_at is not None or not model_version_verify_integrity(version=version):
        # Re-hashed here, not only at load: a file changed on disk since the version last loaded (or one never loaded,
        # like a candidate no request reached) would otherwise get the alias and be found out by its first request.
        errors["version"] = [f"version {version.version} failed its integrity check and cannot be served"]
    elif name != PRODUCTION_ALIAS and version.status in _OUT_OF_TRAFFIC:
        errors["version"] = [
            f"version {version.version} is {version.status}: an alias sends it no traffic; pin it with "
            f"?version={version.version}, or move the production alias to it"
        ]
    if errors:
        raise ValidationError(errors)
    return version


def _refuse_while_owned(model: RegisteredModel, name: str, doing: str) -> None:
    """The production alias stays where it is while a rollout or experiment holds the model's traffic (409): moving
    it would change what the registry says without changing what the router does. The owners end themselves first,
    then move it (rollout promote, experiment conclude). Called under the model's row lock."""
    if name != PRODUCTION_ALIAS:
        return
    owner = traffic_owner(model.pk)
    if owner is not None:
        raise TrafficConflict(
            f"cannot {doing} {model.name}'s production alias while {owner} holds its traffic: {owner.way_out}",
            field="alias",
            owner=owner,
        )


@retry_on_conflict
@transaction.atomic
def alias_create(*, model: RegisteredModel, name: str, version: ModelVersion, actor: Any = None) -> ModelAlias:
    lock_model(model.pk)
    permissions.check(actor, permissions.alias_permission(model, name), model)
    version = _check_alias_target(model, name, version)
    if ModelAlias.objects.filter(model=model, name=name).exists():
        raise ValidationError({"alias": [f"the alias '{name}' already exists on {model.name}; move it instead"]})
    _refuse_while_owned(model, name, "create")
    alias = ModelAlias.objects.create(model=model, name=name, version=version)
    _on_alias_target(alias, previous=None)
    _event(
        model=model,
        version=version,
        action="alias.created",
        actor=actor,
        after={"alias": name, "version": version.version},
    )
    return alias


def _locked_alias(model: RegisteredModel, name: str) -> ModelAlias:
    """The alias row, locked after its model's row (registry.locking's order), or a 400 naming it."""
    lock_model(model.pk)
    alias = (
        ModelAlias.objects.select_for_update(of=("self",))
        .select_related("version")
        .filter(model=model, name=name)
        .first()
    )
    if alias is None:
        raise ValidationError({"alias": [f"{model.name} has no alias '{name}'"]})
    return alias


@retry_on_conflict
@transaction.atomic
def alias_move(*, model: RegisteredModel, name: str, version: ModelVersion, actor: Any = None) -> ModelAlias:
    lock_model(model.pk)
    # Checked under the model's lock, before anything else: the grants as they are at the moment of the move.
    permissions.check(actor, permissions.alias_permission(model, name), model)
    version = _check_alias_target(model, name, version)
    alias = _locked_alias(model, name)
    previous = alias.version
    if previous.pk == version.pk:
        return alias  # nothing changes, whoever holds the traffic
    _refuse_while_owned(model, name, "move")
    alias.version = version
    alias.save(update_fields=["version", "updated_at"])
    _on_alias_target(alias, previous=previous)
    _event(
        model=model,
        version=version,
        action="alias.moved",
        actor=actor,
        before={"alias": name, "version": previous.version},
        after={"alias": name, "version": version.version},
    )
    return alias


@retry_on_conflict
@transaction.atomic
def alias_delete(*, model: RegisteredModel, name: str, actor: Any = None) -> None:
    alias = _locked_alias(model, name)
    permissions.check(actor, permissions.alias_permission(model, name), model)
    if name == PRODUCTION_ALIAS:
        raise ValidationError({"alias": ["the production alias can be moved but not deleted"]})
    version = alias.version
    alias.delete()
    _event(
        model=model,
        version=version,
        action="alias.deleted",
        actor=actor,
        before={"alias": name, "version": version.version},
    )


def alias_set(*, model: RegisteredModel, name: str, version: ModelVersion, actor: Any = None) -> ModelAlias:
    """Create the alias or move it, whichever applies (used by the seed and the CLI)."""
    if ModelAlias.objects.filter(model=model, name=name).exists():
        return alias_move(model=model, name=name, version=version, actor=actor)
    return alias_create(model=model, name=name, version=version, actor=actor)


def _on_alias_target(alias: ModelAlias, *, previous: ModelVersion | None) -> None:
    """The production alias carries the version statuses with it: new one production, old one archived."""
    if alias.name != PRODUCTION_ALIAS:
        return
    ModelVersion.objects.filter(pk=alias.version_id).update(status=VersionStatus.PRODUCTION)
    alias.version.status = VersionStatus.PRODUCTION
    if previous is not None:
        ModelVersion.objects.filter(pk=previous.pk).update(status=VersionStatus.ARCHIVED)


# --- Per-model grants -----------------------------------------------------------------------------------------------


@transaction.atomic
def model_grant_give(
    *, model: RegisteredModel, permission: str, user: Any = None, group: Any = None, actor: Any = None
) -> ModelGrant:
    """Give `permission` (write, deploy or own) on `model` to a user or a group; idempotent. Needs admin."""
    permissions.check(actor, permissions.ADMIN)
    errors: dict[str, list[str]] = {}
    if permission not in GrantPermission.values:
        errors["permission"] = [f"must be one of {', '.join(GrantPermission.values)}"]
    if (user is None) == (group is None):
        errors["user"] = ["give the grant to a user or to a group (exactly one)"]
    if errors:
        raise ValidationError(errors)
    grant, created = ModelGrant.objects.get_or_create(model=model, user=user, group=group, permission=permission)
    if created:
        audit.record("grant.given", target=grant, before=None, after=_grant_snapshot(grant), actor=actor,
                     source=audit.current_source())  # fmt: skip
    return grant


def _grant_snapshot(grant: ModelGrant) -> dict[str, Any]:
    return {
        "model": grant.model.name,
        "permission": grant.permission,
        "user": grant.user.username if grant.user else None,
        "group": grant.group.name if grant.group else None,
    }


@transaction.atomic
def model_grant_revoke(*, grant: ModelGrant, actor: Any = None) -> None:
    permissions.check(actor, permissions.ADMIN)
    if ModelGrant.objects.filter(pk=grant.pk).delete()[0]:
        audit.record("grant.revoked", target=grant, before=_grant_snapshot(grant), after=None, actor=actor,
                     source=audit.current_source())  # fmt: skip
