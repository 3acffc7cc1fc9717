"""OOD profiles: computed from a version's reference sample, whenever that sample is stored or on demand."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import transaction

from monitoring import ood
from monitoring.models import OodProfile, ReferenceDataset
from registry.models import ModelVersion

KEEP: Any = object()  # ood_profile_build's default refusal threshold: the one the version has


def ood_profile_build(
    *, version: ModelVersion, frame: pd.DataFrame | None = None, refuse_above: float | None = KEEP
) -> OodProfile:
    """(Re)compute the version's profile from its reference sample (`frame`: that sample, already read).
    `refuse_above`: refuse requests with a row scoring above it (None: flag only; KEEP: as it was)."""
    if refuse_above is not KEEP and refuse_above is not None and not _threshold_ok(refuse_above):
        raise ValidationError({"refuse_above": ["must be a number of at least 1 (1: anything outside the reference)"]})
    dataset = ReferenceDataset.objects.filter(version=version).first()
    if dataset is None:
        raise ValidationError({"version": [f"{version} has no reference sample to profile"]})
    if frame is None:
        with storages["artifacts"].open(dataset.path, "rb") as handle:
            frame = pd.read_csv(handle)
    profile = ood.build_profile(version.signature, frame)
    defaults = {"profile": profile, "reference_path": dataset.path, "rows": len(frame)}
    if refuse_above is not KEEP:
        defaults["refuse_above"] = refuse_above
    with transaction.atomic():
        stored, _ = OodProfile.objects.update_or_create(version=version, defaults=defaults)
        # This process reads it again at once, and once more after the commit (a read in between saw the old row).
        ood.forget(version.pk)
        transaction.on_commit(lambda: ood.forget(version.pk))
    return stored


def _threshold_ok(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value >= 1
