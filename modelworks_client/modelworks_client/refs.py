"""Version references, the grammar the server accepts (registry/refs.py):

models:/<slug name>/<int version>      e.g. models:/churn/3
models:/<slug name>@<alias>            e.g. models:/churn@production
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelworks_client.errors import InvalidReference

_REF = re.compile(r"^models:/(?P<name>[-a-zA-Z0-9_]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[a-z][a-z0-9_-]{0,62}))$")


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: exactly one of `version` and `alias` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return (
            f"models:/{self.name}/{self.version}" if self.version is not None else f"models:/{self.name}@{self.alias}"
        )


def parse_ref(text: str) -> ModelRef:
    """`models:/name/3` or `models:/name@alias` as a ModelRef; InvalidReference (a ValueError) otherwise."""
    match = _REF.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidReference(
            f"{text!r} is not a model reference: write models:/<name>/<version> or models:/<name>@<alias>"
        )
    if match["version"] is not None:
        number = int(match["version"])
        if number < 1:
            raise InvalidReference(f"{text!r}: versions start at 1")
        return ModelRef(match["name"], version=number)
    return ModelRef(match["name"], alias=match["alias"])
