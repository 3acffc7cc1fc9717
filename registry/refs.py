"""Version references: how a person or a script names one model version.

Accepted wherever a version is named (API bodies, commands, the admin's experiment form):
    3                       a version number of the model the request is about (also "3")
    models:/churn/3         version 3 of churn
    models:/churn@staging   the version churn's alias "staging" points at now

The grammar is `models:/<slug name>/<int version>` | `models:/<slug name>@<alias>`, MLflow's spelling; the
Python client parses the same. `parse` checks the spelling only; `resolve` finds the version, refusing a reference
to another model than the one the request is about, an unknown version and an unknown alias. Both raise django's
ValidationError keyed by the field, so an API answers 400 on that field and a command prints one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from registry.models import ModelAlias, ModelVersion, RegisteredModel

PREFIX = "models:/"
NAME = r"[-a-zA-Z0-9_]{1,100}"  # a SlugField of RegisteredModel.name's length
ALIAS = r"[a-z][a-z0-9_-]{0,62}"  # registry.models.ALIAS_NAME
NUMBER = r"[0-9]+"
REFERENCE = re.compile(rf"models:/(?P<name>{NAME})(?:/(?P<version>{NUMBER})|@(?P<alias>{ALIAS}))")
MAX_VERSION = 2**31 - 1  # PositiveIntegerField's range on Postgres
SYNTAX = "a version number, models:/<name>/<version> or models:/<name>@<alias>"


@dataclass(frozen=True)
class VersionRef:
    """A parsed reference: a version number, or an alias, optionally with the model it names."""

    model: str | None = None
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.model is None:
            return str(self.version)
        return f"{PREFIX}{self.model}/{self.version}" if self.alias is None else f"{PREFIX}{self.model}@{self.alias}"


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def parse(value: Any, *, field: str = "version") -> VersionRef:
    """The reference `value` spells: an int (or a string of digits) or a `models:/` reference.

    ValidationError({field: [...]}) when it is neither; never anything else, whatever `value` is.
    """
    if isinstance(value, VersionRef):
        return value
    if isinstance(value, bool):
        raise _invalid(field, f"expected {SYNTAX}, not a boolean")
    if isinstance(value, int):
        if not 1 <= value <= MAX_VERSION:
            raise _invalid(field, f"a version number is at least 1 (and at most {MAX_VERSION})")
        return VersionRef(version=value)
    if not isinstance(value, str):
        raise _invalid(field, f"expected {SYNTAX}")
    text = value.strip()
    if text.isascii() and text.isdigit():
        return VersionRef(version=_number(text, field))
    match = REFERENCE.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise _invalid(field, f"{shown!r} is not {SYNTAX}")
    version = match["version"]
    number = _number(version, field) if version is not None else None
    return VersionRef(model=match["name"], version=number, alias=match["alias"])


def _number(digits: str, field: str) -> int:
    """ASCII digits as a version number in range (never int() of thousands of digits, which Python refuses)."""
    stripped = digits.lstrip("0")
    if not stripped:
        raise _invalid(field, "a version number is at least 1")
    if len(stripped) > len(str(MAX_VERSION)) or int(stripped) > MAX_VERSION:
        raise _invalid(field, f"a version number is at most {MAX_VERSION}")
    return int(stripped)


def resolve(model: RegisteredModel, value: Any, *, field: str = "version") -> ModelVersion:
    """The version of `model` that `value` (anything `parse` takes) names.

    ValidationError({field: [...]}) on a bad spelling, a reference to another model, an unknown version or alias.
    """
    ref = parse(value, field=field)
    if ref.model is not None and ref.model != model.name:
        raise _invalid(field, f"{ref} names the model '{ref.model}', not '{model.name}'")
    if ref.alias is not None:
        alias = ModelAlias.objects.filter(model=model, name=ref.alias).select_related("version__model").first()
        if alias is None:
            known = ", ".join(model.aliases.order_by("name").values_list("name", flat=True)) or "none"
            raise _invalid(field, f"{model.name} has no alias '{ref.alias}' (its aliases: {known})")
        return alias.version
    version = ModelVersion.objects.select_related("model").filter(model=model, version=ref.version).first()
    if version is None:
        raise _invalid(field, f"{model.name} has no version {ref.version}")
    return version


def model_named(text: str, *, field: str = "model") -> tuple[RegisteredModel, VersionRef | None]:
    """A command's MODEL argument: a model name, or a `models:/` reference (then also the reference, to resolve).

    ValidationError({field: [...]}) when no such model exists or the reference is misspelt.
    """
    ref = parse(text, field=field) if text.strip().startswith(PREFIX) else None
    name = ref.model if ref is not None else text.strip()
    model = RegisteredModel.objects.filter(name=name).first()
    if model is None:
        raise _invalid(field, f"no model named {name!r}")
    return model, ref
