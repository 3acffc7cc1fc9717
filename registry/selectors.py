"""Registry reads that need more than a one-line query."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from registry.models import ModelAlias, ModelVersion, RegisteredModel, RegistryEvent


def registered_model_list() -> QuerySet[RegisteredModel]:
    return RegisteredModel.objects.select_related("owner").prefetch_related(
        Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")),
        Prefetch("versions", queryset=ModelVersion.objects.only("id", "model_id", "version")),
    )


def registered_model_get(name: str) -> RegisteredModel:
    return get_object_or_404(registered_model_list(), name=name)


def model_version_list(model: RegisteredModel) -> QuerySet[ModelVersion]:
    return model.versions.select_related("model", "created_by").prefetch_related("aliases").order_by("-version")


def registry_event_list(model: RegisteredModel) -> QuerySet[RegistryEvent]:
    return model.events.select_related("version").order_by("-created_at", "-id")


def previous_production(version: ModelVersion) -> ModelVersion | None:
    """The version the production alias pointed at just before it moved to `version`, if it still exists."""
    moved = (
        RegistryEvent.objects.filter(
            model_id=version.model_id, action="alias.moved", after__alias="production", after__version=version.version
        )
        .order_by("-id")
        .values_list("before", flat=True)
        .first()
    )
    if moved is None:
        return None
    return ModelVersion.objects.filter(model_id=version.model_id, version=moved["version"]).first()


def production_version(model: RegisteredModel) -> ModelVersion | None:
    """The version the model's production alias points at now, or None when it has no production alias."""
    alias = ModelAlias.objects.filter(model=model, name="production").select_related("version__model").first()
    return alias.version if alias is not None else None
