"""The client's exceptions. Every one is a ModelworksError; those the server answered are ApiErrors carrying the
HTTP status and the server's detail (field-level for a 400), with a readable one-line str()."""

from __future__ import annotations

from typing import Any


class ModelworksError(Exception):
    """Anything the client could not do, with a one-line message saying why."""


class InvalidReference(ModelworksError, ValueError):
    """A `models:/...` reference that does not follow the grammar."""


class UntrustedArtifact(ModelworksError):
    """The artifact would run code, or holds types outside the allow-list, so it is not loaded."""


def flatten_detail(detail: Any, prefix: str = "") -> list[str]:
    """DRF's error bodies ({"field": ["msg"]}, nested for lists of items) and the hot path's
    ({"detail": ..., "errors": [{"row", "field", "message"}]}) as readable "field: message" parts."""
    if isinstance(detail, dict):
        if set(detail) >= {"message"} and ("field" in detail or "row" in detail):
            where = " ".join(
                part
                for part in (
                    f"row {detail['row']}" if detail.get("row") is not None else "",
                    f"'{detail['field']}'" if detail.get("field") else "",
                )
                if part
            )
            return [f"{where}: {detail['message']}" if where else str(detail["message"])]
        parts: list[str] = []
        for key, value in detail.items():
            name = "" if key in ("detail", "non_field_errors", "errors") and not prefix else f"{prefix}{key}"
            parts.extend(flatten_detail(value, f"{name}." if name else ""))
        return parts
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            text = " ".join(str(item) for item in detail)
            return [f"{prefix[:-1]}: {text}" if prefix else text] if detail else []
        parts = []
        for index, item in enumerate(detail):
            here = f"{prefix}{index}." if prefix else ("" if isinstance(item, dict) and "message" in item else "")
            parts.extend(flatten_detail(item, here))
        return parts
    if detail is None or detail == "":
        return []
    return [f"{prefix[:-1]}: {detail}" if prefix else str(detail)]


class ApiError(ModelworksError):
    """The server refused a request: `status`, `method`, `path` and `detail` (the parsed body: a dict of
    field -> messages for a 400)."""

    def __init__(self, status: int | None, method: str, path: str, detail: Any = None) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.detail = detail
        super().__init__(self._message())

    @property
    def fields(self) -> dict[str, Any]:
        """The field-level part of the detail ({} when the server gave a single message)."""
        if isinstance(self.detail, dict):
            return {k: v for k, v in self.detail.items() if k != "detail"}
        return {}

    def _message(self) -> str:
        text = "; ".join(flatten_detail(self.detail)) or "no detail given"
        return f"{self.status} on {self.method} {self.path}: {text}"


class NotFound(ApiError):
    """404: no such model, version, alias, rollout or monitor."""


class PermissionDenied(ApiError):
    """401 or 403: no or a wrong credential, or an API key without the scope the request needs."""


class Conflict(ApiError):
    """409: refused because of the platform's state (a rollout holds the traffic, a concurrent change)."""


class ArtifactTampered(Conflict):
    """The artifact's bytes do not hash to the sha256 recorded at registration: refused, never loaded."""


class GateRejected(ApiError):
    """The version was stored but rejected by the model's quality gates. `version` is the rejected Version,
    `failed` its failed rules (dicts with rule, metric, actual, threshold, reason)."""

    def __init__(self, version: Any, method: str = "POST", path: str = "") -> None:
        self.version = version
        self.failed: list[dict[str, Any]] = [r for r in version.gate_report.get("rules", []) if not r.get("passed")]
        super().__init__(201, method, path, version.gate_report)

    def _message(self) -> str:
        reasons = "; ".join(f"{r['rule']} ({r.get('reason') or 'failed'})" for r in self.failed) or "no rule passed"
        return f"{self.version.model} v{self.version.version} was rejected by its quality gates: {reasons}"


class RolloutTimeout(ModelworksError):
    """wait_for_rollout gave up: the rollout (`rollout`, its last state) was still going."""

    def __init__(self, rollout: Any, seconds: float) -> None:
        self.rollout = rollout
        super().__init__(
            f"rollout {rollout.id} is still {rollout.status} after {seconds:g} s "
            f"(stage {rollout.stage_index + 1} of {len(rollout.stages)}, {rollout.candidate_percent:g}% to v"
            f"{rollout.candidate})"
        )


def error_for(status: int, method: str, path: str, detail: Any) -> ApiError:
    """The ApiError subclass for an HTTP status."""
    kind: type[ApiError] = {404: NotFound, 401: PermissionDenied, 403: PermissionDenied, 409: Conflict}.get(
        status, ApiError
    )
    if status == 409 and "tamper" in str(detail).lower():
        kind = ArtifactTampered
    return kind(status, method, path, detail)
