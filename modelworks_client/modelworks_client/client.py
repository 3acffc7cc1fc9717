"""`Client`: the platform's REST API for notebooks and CI scripts.

Every method is one or a few HTTP calls to the server's canonical URLs (`/api/v1/models/{name}/...`, trailing slash;
predictions at `/api/v1/models/{name}/predict`). A refusal raises an ApiError subclass carrying the server's
field-level detail. pandas, scikit-learn and skops are imported only by the methods that need them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from modelworks_client import artifacts
from modelworks_client.errors import (
    ArtifactTampered,
    GateRejected,
    InvalidReference,
    ModelworksError,
    NotFound,
    RolloutTimeout,
    error_for,
)
from modelworks_client.refs import ModelRef, parse_ref
from modelworks_client.signature import infer_signature, infer_task, plain

if TYPE_CHECKING:
    import pandas as pd

USER_AGENT = "modelworks-client/0.1"
API = "/api/v1"
API_KEY_PREFIX = "mwk_"  # serving/keys.py: API keys start with it; anything else is a user's token (mwt_...)
PREDICT_BATCH = 1000  # the server's default MODELWORKS_MAX_BATCH
PAGE = 200
ROLLOUT_DONE = ("promoted", "rolled_back", "aborted")
ROLLOUT_STOPPED = (*ROLLOUT_DONE, "paused")  # paused needs a person: waiting longer changes nothing


@dataclass
class Version:
    """One registered model version as the server describes it (`raw` holds the whole answer)."""

    model: str
    version: int
    status: str
    format: str
    sha256: str
    size_bytes: int
    signature: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, Any]
    gate_report: dict[str, Any]
    aliases: list[str]
    integrity_ok: bool
    created_at: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> Version:
        return cls(
            model=body["model"],
            version=int(body["version"]),
            status=body["status"],
            format=body["format"],
            sha256=body["sha256"],
            size_bytes=int(body["size_bytes"]),
            signature=body.get("signature") or {},
            metrics=body.get("metrics") or {},
            tags=body.get("tags") or {},
            gate_report=body.get("gate_report") or {},
            aliases=list(body.get("aliases") or []),
            integrity_ok=bool(body.get("integrity_ok", True)),
            created_at=body.get("created_at", ""),
            raw=body,
        )

    @property
    def ref(self) -> str:
        """`models:/name/N`."""
        return f"models:/{self.model}/{self.version}"

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    @property
    def gate_metrics(self) -> dict[str, float]:
        """The metrics the gates judged (computed by the platform from the evaluation data, else the submitted ones)."""
        return {**self.metrics, **(self.gate_report.get("metrics") or {})}

    @property
    def failed_rules(self) -> list[dict[str, Any]]:
        return [rule for rule in self.gate_report.get("rules", []) if not rule.get("passed")]


@dataclass
class Rollout:
    """A rollout's state (`raw` holds the whole answer, with its events and live figures)."""

    id: int
    model: str
    candidate: int
    baseline: int
    mode: str
    status: str
    stages: list[int]
    stage_index: int
    stage_seconds: int
    candidate_percent: float
    reason: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> Rollout:
        return cls(
            id=int(body["id"]),
            model=body["model"],
            candidate=int(body["candidate"]),
            baseline=int(body["baseline"]),
            mode=body["mode"],
            status=body["status"],
            stages=list(body.get("stages") or []),
            stage_index=int(body.get("stage_index") or 0),
            stage_seconds=int(body.get("stage_seconds") or 0),
            candidate_percent=float(body.get("candidate_percent") or 0),
            reason=body.get("reason") or "",
            raw=body,
        )

    @property
    def finished(self) -> bool:
        return self.status in ROLLOUT_DONE

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.raw.get("events") or [])


@dataclass
class DriftReport:
    """A monitor's drift report (`features` per feature test; `raw` the whole answer)."""

    id: int
    monitor: int
    model: str
    version: int | None
    dataset_drift: bool
    drift_share: float | None
    drifted_features: list[str]
    features: Any
    created_at: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> DriftReport:
        return cls(
            id=int(body["id"]),
            monitor=int(body["monitor"]),
            model=body.get("model_name", ""),
            version=body.get("version"),
            dataset_drift=bool(body.get("dataset_drift")),
            drift_share=body.get("drift_share"),
            drifted_features=list(body.get("drifted_features") or []),
            features=body.get("features"),
            created_at=body.get("created_at", ""),
            raw=body,
        )


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, pandas/datetime timestamps: what a DataFrame's cells hold."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be sent as JSON")


def _dumps(body: Any) -> bytes:
    try:
        return json.dumps(body, default=_json_default, allow_nan=False).encode()
    except ValueError as exc:
        raise ModelworksError(f"the request cannot be sent as JSON ({exc}): give missing values as None") from None


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame's rows as JSON-ready dicts: plain Python numbers (exact floats), NaN/NaT as None."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict")


class Client:
    """A Modelworks platform: `Client("http://host:8000", token="...")`.

    `url` and `token` fall back to MODELWORKS_URL and MODELWORKS_TOKEN. The token is an API key (`mwk_...`, sent as
    `Authorization: Api-Key`) or a user's API token (sent as `Authorization: Token`).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30) -> None:
        url = url or os.environ.get("MODELWORKS_URL") or "http://127.0.0.1:8000"
        token = token if token is not None else os.environ.get("MODELWORKS_TOKEN")
        self.url = url.rstrip("/")
        # X-Modelworks-Client: the server's audit trail tells this client's changes apart from raw API calls
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "X-Modelworks-Client": USER_AGENT}
        if token:
            scheme = "Api-Key" if token.startswith(API_KEY_PREFIX) else "Token"
            headers["Authorization"] = f"{scheme} {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        accept: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = dict(headers or {})
        content = None
        if body is not None:
            content = _dumps(body)
            headers["Content-Type"] = "application/json"
        if accept:
            headers["Accept"] = accept
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, content=content, params=params or None, files=files, data=data, headers=headers
            )
        except httpx.TimeoutException:
            raise ModelworksError(f"{method} {path}: no answer from {self.url} in time") from None
        except httpx.HTTPError as exc:
            raise ModelworksError(f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail: Any = response.json()
            except ValueError:
                detail = response.text.strip()[:300] or response.reason_phrase
            raise error_for(response.status_code, method, path, detail)
        return response

    def _json(self, method: str, path: str, **options: Any) -> Any:
        response = self._request(method, path, **options)
        return response.json() if response.content else None

    def _pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._json("GET", path, params={**(params or {}), "limit": PAGE, "offset": offset})
            if isinstance(page, list):  # an unpaginated list
                yield from page
                return
            results = page.get("results") or []
            yield from results
            offset += len(results)
            if not results or not page.get("next"):
                return

    # --- Models and versions --------------------------------------------------------------------------------------

    def model(self, name: str) -> dict[str, Any]:
        """The registered model: task, tags, gate_rules, aliases {name: version}, latest_version."""
        return self._json("GET", f"{API}/models/{name}/")

    def models(self) -> list[dict[str, Any]]:
        return list(self._pages(f"{API}/models/"))

    def versions(self, name: str) -> list[Version]:
        """Every version of the model, newest first."""
        return [Version.from_api(body) for body in self._pages(f"{API}/models/{name}/versions/")]

    def version(self, name: str, version: int | str) -> Version:
        """One version, by number, `models:/name/N` or `models:/name@alias`."""
        number = self._version_number(name, version)
        return Version.from_api(self._json("GET", f"{API}/models/{name}/versions/{number}/"))

    def compare(self, name: str, versions: Sequence[int | str]) -> pd.DataFrame:
        """The versions' metrics side by side: one row per metric, one column per version ("v1", "v2", ...)."""
        import pandas as pd

        found = [self.version(name, v) for v in versions]
        columns = {f"v{v.version}": v.gate_metrics for v in found}
        frame = pd.DataFrame(columns)
        frame.index.name = "metric"
        return frame.sort_index()

    def register(
        self,
        model: Any,
        name: str,
        *,
        eval_data: pd.DataFrame | None = None,
        target: str = "target",
        gates: list[str] | None = None,
        tags: dict[str, Any] | None = None,
        alias: str | None = None,
        task: str | None = None,
        description: str = "",
        metrics: dict[str, float] | None = None,
        params: dict[str, Any] | None = None,
        signature: dict[str, Any] | None = None,
        format: str | None = None,  # noqa: A002 - the server's field name
        convert_onnx: bool | None = None,
    ) -> Version:
        """Register a fitted model (or an artifact file's path or bytes) as the next version of `name`.

        A model object is serialised with skops and its signature inferred from the model and `eval_data` (a
        DataFrame holding the features and the `target` column, on which the platform computes the metrics its gates
        judge). The registered model is created when absent (task inferred: classification or regression); `gates`
        replace its quality-gate rules. Returns the Version with its gate report; raises GateRejected (carrying the
        version and its failed rules) when the gates rejected it. `alias` is pointed at the version once it passed.
        `convert_onnx` (default: the model's setting) has a worker convert it to ONNX afterwards (see convert_onnx).
        """
        artifact, filename, fmt, loaded = self._artifact_of(model, format)
        features = eval_data.drop(columns=[target]) if eval_data is not None and target in eval_data else eval_data
        if signature is None and loaded is not None:
            signature = infer_signature(loaded, features)
        if task is None and loaded is not None:
            task = infer_task(loaded)
        self._ensure_model(name, task=task, gates=gates, description=description)
        fields: dict[str, Any] = {"target_column": target}
        if fmt:
            fields["format"] = fmt
        if convert_onnx is not None:
            fields["convert_onnx"] = "true" if convert_onnx else "false"
        library_versions = _library_versions()
        for key, value in (("signature", signature), ("metrics", metrics), ("params", params), ("tags", tags),
                           ("library_versions", library_versions)):  # fmt: skip
            if value is not None:
                fields[key] = _dumps(value).decode()
        files: dict[str, Any] = {"artifact": (filename, artifact, "application/octet-stream")}
        if eval_data is not None:
            csv = eval_data.to_csv(index=False).encode()
            files["evaluation_data"] = ("evaluation.csv", csv, "text/csv")
        path = f"{API}/models/{name}/versions/"
        version = Version.from_api(self._json("POST", path, data=fields, files=files))
        if version.rejected:
            raise GateRejected(version, "POST", path)
        if alias:
            self.set_alias(name, alias, version.version)
            version = self.version(name, version.version)
        return version

    def distill(
        self, name: str, version: int | str, student: str, *, augment_rows: int = 0, target: str | None = None,
        seed: int = 0,
    ) -> Version:  # fmt: skip
        """Train a smaller student ("logistic", "tree" or "forest:N") on a version's own predictions and register it
        as the model's next version, through its gates; its gate report's "comparison" sets size, latency and
        metrics beside the teacher's. Raises GateRejected when the gates rejected it."""
        number = self._version_number(name, version)
        path = f"{API}/models/{name}/versions/{number}/distill"
        body = {"student": student, "augment_rows": augment_rows, "seed": seed}
        if target is not None:
            body["target_column"] = target
        distilled = Version.from_api(self._json("POST", path, body=body))
        if distilled.rejected:
            raise GateRejected(distilled, "POST", path)
        return distilled

    def _artifact_of(self, model: Any, fmt: str | None) -> tuple[bytes, str, str | None, Any]:
        """(bytes, file name, format, the model object when we have one: a skops file is loaded here, with the
        server's trust rules, so that its task and signature can be inferred as for a model object)."""
        if isinstance(model, bytes | bytearray | str | os.PathLike):
            if isinstance(model, bytes | bytearray):
                data, filename = bytes(model), f"model.{fmt or 'skops'}"
            else:
                source = Path(model)
                try:
                    data = source.read_bytes()
                except OSError as exc:
                    raise ModelworksError(f"cannot read {source}: {exc.strerror}") from None
                filename = source.name
            loaded = None
            if (fmt or ("skops" if data.startswith(artifacts.ZIP_MAGIC) else None)) == "skops":
                try:
                    loaded = artifacts.load_artifact(data, "skops")
                except Exception:  # noqa: BLE001 - the server says why it refuses the file, in its own words
                    loaded = None
            return data, filename, fmt, loaded
        try:
            import skops.io as sio
        except ImportError:
            raise ModelworksError("registering a model object needs skops: pip install skops") from None
        return sio.dumps(model), "model.skops", "skops", model

    def _ensure_model(self, name: str, *, task: str | None, gates: list[str] | None, description: str) -> None:
        try:
            existing = self.model(name)
        except NotFound:
            existing = None
        if existing is None:
            if task is None:
                raise ModelworksError(f"{name} is not registered yet: give task='classification' or 'regression'")
            body = {"name": name, "task": task, "description": description, "gate_rules": gates or []}
            self._json("POST", f"{API}/models/", body=body)
            return
        changes: dict[str, Any] = {}
        if gates is not None and list(gates) != existing.get("gate_rules"):
            changes["gate_rules"] = list(gates)
        if description and description != existing.get("description"):
            changes["description"] = description
        if changes:
            self._json("PATCH", f"{API}/models/{name}/", body=changes)

    def set_gates(self, name: str, gates: list[str]) -> dict[str, Any]:
        """Replace the model's quality-gate rules, e.g. ["accuracy >= 0.9", "f1 >= production - 0.01"]."""
        return self._json("PATCH", f"{API}/models/{name}/", body={"gate_rules": list(gates)})

    def set_alias(self, name: str, alias: str, version: int | str) -> dict[str, Any]:
        """Point `alias` (e.g. "production") at a version, creating the alias or moving it."""
        number = self._version_number(name, version)
        try:
            self._json("GET", f"{API}/models/{name}/aliases/{alias}/")
        except NotFound:
            return self._json("POST", f"{API}/models/{name}/aliases/", body={"alias": alias, "version": number})
        return self._json("PUT", f"{API}/models/{name}/aliases/{alias}/", body={"version": number})

    # --- Optimisation ----------------------------------------------------------------------------------------------

    def convert_onnx(self, name: str, version: int | str, *, wait: float = 0, poll: float = 1.0) -> Version:
        """Queue a version's ONNX conversion (parity on its evaluation set, both runtimes timed, the faster serves);
        with `wait` > 0, poll up to that many seconds until it is no longer pending. `Version.raw["onnx"]` holds the
        report: status (converted, parity_failed, failed), parity, latency_ms, chosen runtime."""
        number = self._version_number(name, version)
        answer = Version.from_api(self._json("POST", f"{API}/models/{name}/versions/{number}/onnx/"))
        deadline = time.monotonic() + wait
        while wait and (answer.raw.get("onnx") or {}).get("status") == "pending" and time.monotonic() < deadline:
            time.sleep(poll)
            answer = self.version(name, number)
        return answer

    def set_runtime(self, name: str, version: int | str, runtime: str) -> Version:
        """Serve a version with "onnx" or "sklearn" whatever was measured faster, or "" to go back to the measure."""
        number = self._version_number(name, version)
        path = f"{API}/models/{name}/versions/{number}/runtime/"
        return Version.from_api(self._json("PUT", path, body={"runtime": runtime}))

    def quantize(self, name: str, version: int | str) -> Version:
        """Register a dynamically quantised copy of a version's ONNX model as a new candidate version, judged by the
        gates plus "accuracy >= parent - 0.005"; its gate report's `comparison` has size and latency beside the
        parent's. Raises GateRejected when the gates reject it."""
        number = self._version_number(name, version)
        path = f"{API}/models/{name}/versions/{number}/quantize/"
        made = Version.from_api(self._json("POST", path))
        if made.rejected:
            raise GateRejected(made, "POST", path)
        return made

    def _version_number(self, name: str, version: int | str) -> int:
        """A version given as 3, "3", "models:/name/3" or "models:/name@alias", as its number."""
        if isinstance(version, int) and not isinstance(version, bool):
            return version
        if isinstance(version, str) and version.strip().isdigit():
            return int(version)
        ref = parse_ref(str(version))
        if ref.name != name:
            raise InvalidReference(f"{ref} names the model {ref.name}, not {name}")
        return self._resolve(ref)

    def _resolve(self, ref: ModelRef) -> int:
        if ref.version is not None:
            return ref.version
        return int(self._json("GET", f"{API}/models/{ref.name}/aliases/{ref.alias}/")["version"])

    # --- Artifacts -------------------------------------------------------------------------------------------------

    def download(self, ref: str, path: str | os.PathLike | None = None) -> tuple[bytes, Version]:
        """The artifact of `models:/name/N` or `models:/name@alias`, verified (see load_model); written to `path`
        too when given. Raises ArtifactTampered when the bytes are not the ones registered."""
        parsed = parse_ref(ref)
        version = self.version(parsed.name, self._resolve(parsed))
        where = f"{API}/models/{version.model}/versions/{version.version}/artifact/"
        if not version.integrity_ok:
            raise ArtifactTampered(409, "GET", where, {"detail": f"{version.ref} failed the server's integrity check"})
        response = self._request("GET", where, accept="application/octet-stream, application/json")
        data = response.content
        actual = artifacts.sha256_of(data)
        header = response.headers.get("X-Artifact-SHA256", "")
        for claimed, source in ((header, "the X-Artifact-SHA256 header"), (version.sha256, "the registry")):
            if actual != claimed:
                raise ArtifactTampered(
                    409, "GET", where, {"detail": f"the artifact hashes to {actual}, {source} says {claimed or '?'}"}
                )
        if path is not None:
            Path(path).write_bytes(data)
        return data, version

    def load_model(self, ref: str, *, trust_pickle: bool = False, trusted_types: Iterable[str] = ()) -> Any:
        """Download `models:/name@alias` or `models:/name/N` and load it here, with the server's trust rules.

        The bytes must hash to the sha256 in the response's header and to the version's recorded sha256 (else
        ArtifactTampered). skops archives load with the server's allow-list plus `trusted_types`; ONNX through
        onnxruntime (an InferenceSession); pickle/joblib only with `trust_pickle=True` (else UntrustedArtifact).
        """
        data, version = self.download(ref)
        return artifacts.load_artifact(data, version.format, trust_pickle=trust_pickle, trusted_types=trusted_types)

    # --- Predictions -----------------------------------------------------------------------------------------------

    def predict(
        self,
        name: str,
        rows: Any,
        *,
        key: str | None = None,
        version: int | str | None = None,
        alias: str | None = None,
        wait: bool = True,
        callback_url: str | None = None,
    ) -> pd.DataFrame | AsyncPrediction:
        """Predictions for a DataFrame, a list of {feature: value} rows (or of value lists in signature order), or
        one row as a dict: a DataFrame with `prediction` and, for classifiers, `proba_<class>` per class.

        `key` routes consistently (the same key, the same arm of a rollout or experiment); `version`/`alias` pin
        what serves. The answer's model, version(s) and request ids are in `.attrs`. `wait=False`: answered over the
        server's queue instead (`predict_async`), with the answer sent to `callback_url` too when given.
        """
        index = None
        if _is_frame(rows):
            index = rows.index
            field_name, items = "instances", _records(rows)
        elif isinstance(rows, dict):
            field_name, items = "instances", [rows]
        else:
            items = list(rows)
            field_name = "inputs" if items and isinstance(items[0], list | tuple) else "instances"
        params: dict[str, Any] = {"alias": alias}
        if version is not None:
            number = self._version_number(name, version)
            params["version"] = number
        if not wait:
            if len(items) > PREDICT_BATCH:
                raise ValueError(f"{len(items)} rows: an asynchronous prediction takes at most {PREDICT_BATCH}")
            body = {field_name: items, **({"key": key} if key is not None else {})}
            if callback_url is not None:
                body["callback_url"] = callback_url
            answer = self._json("POST", f"{API}/models/{name}/predict", body=body, params=params,
                                headers={"Prefer": "respond-async"})  # fmt: skip
            return AsyncPrediction(answer["id"], answer["request_id"], answer.get("callback_secret"))
        answers = []
        for start in range(0, max(len(items), 1), PREDICT_BATCH):
            body: dict[str, Any] = {field_name: items[start : start + PREDICT_BATCH]}
            if key is not None:
                body["key"] = key
            answers.append(self._json("POST", f"{API}/models/{name}/predict", body=body, params=params))
        return _prediction_frame(answers, index)

    def predict_async(self, name: str, rows: Any, **options: Any) -> AsyncPrediction:
        """`predict(..., wait=False)`: queued on the server (at most 1,000 rows), answered by a worker; the handle's
        id is for `prediction(id)`. `callback_url` (optional) receives the answer, signed with `callback_secret`."""
        return self.predict(name, rows, wait=False, **options)

    def prediction(self, prediction_id: str, *, timeout: float = 0, poll: float = 0.2) -> dict[str, Any]:
        """An asynchronous prediction's status (queued, running, succeeded, failed) and, once finished, `answer`:
        the synchronous endpoint's body (`status_code` says which). With `timeout`, waits that long for it to finish."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._json("GET", f"{API}/predictions/{prediction_id}")
            if found["status"] in ("succeeded", "failed") or time.monotonic() >= deadline:
                return found
            time.sleep(poll)

    def prediction_frame(self, prediction_id: str, *, timeout: float = 60) -> pd.DataFrame:
        """The finished asynchronous prediction as `predict` gives it (a DataFrame); the server's refusal raised as
        `predict` raises it (e.g. a 400 naming the bad rows' fields); ModelworksError when not finished in time."""
        found = self.prediction(prediction_id, timeout=timeout)
        path = f"{API}/predictions/{prediction_id}"
        if found["status"] == "failed":
            raise error_for(found["status_code"], "GET", path, found["answer"])
        if found["status"] != "succeeded":
            raise ModelworksError(f"GET {path}: still {found['status']} after {timeout} s")
        return _prediction_frame([found["answer"]], None)

    # --- Rollouts --------------------------------------------------------------------------------------------------

    def rollout(
        self,
        name: str,
        version: int | str,
        *,
        stages: list[int] | None = None,
        stage_seconds: int = 300,
        mode: str = "canary",
        shadow_percent: float = 0.0,
        analysis: dict[str, float] | None = None,
    ) -> Rollout:
        """Start moving `name`'s production traffic to `version` in stages (default 10, 25, 50, 100 percent), each
        judged healthy before the next; a shadow rollout (mode="shadow") only mirrors `shadow_percent` of traffic."""
        body: dict[str, Any] = {
            "version": self._version_number(name, version),
            "mode": mode,
            "stage_seconds": stage_seconds,
            "shadow_percent": shadow_percent,
        }
        if stages is not None:
            body["stages"] = list(stages)
        if analysis is not None:
            body["analysis"] = dict(analysis)
        return Rollout.from_api(self._json("POST", f"{API}/models/{name}/rollouts/", body=body))

    def rollout_status(self, rollout_id: int) -> Rollout:
        return Rollout.from_api(self._json("GET", f"{API}/rollouts/{rollout_id}/"))

    def rollouts(self, name: str) -> list[Rollout]:
        """The model's rollouts, newest first."""
        return [Rollout.from_api(body) for body in self._pages(f"{API}/models/{name}/rollouts/")]

    def wait_for_rollout(self, rollout_id: int, timeout: float = 3600, poll: float = 2.0) -> Rollout:
        """Poll until the rollout is promoted, rolled back, aborted or paused, and return it then; RolloutTimeout
        (with the last state) when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            rollout = self.rollout_status(rollout_id)
            if rollout.status in ROLLOUT_STOPPED:
                return rollout
            if time.monotonic() >= deadline:
                raise RolloutTimeout(rollout, timeout)
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    def rollout_control(self, rollout_id: int, action: str) -> Rollout:
        """pause, resume, promote or abort a rollout by hand."""
        if action not in ("pause", "resume", "promote", "abort"):
            raise ModelworksError(f"unknown action {action!r}: pause, resume, promote or abort")
        return Rollout.from_api(self._json("POST", f"{API}/rollouts/{rollout_id}/{action}/"))

    def rollback(self, name: str) -> dict[str, int]:
        """Put the previous production version back (aborting a rollout in progress): {"taken_out", "serving"}."""
        return self._json("POST", f"{API}/models/{name}/rollback/")

    # --- Batch scoring --------------------------------------------------------------------------------------------

    def batch_job(
        self,
        name: str,
        input: str,
        output: str,
        *,
        version: int | str | None = None,
        input_format: str | None = None,
        passthrough: Sequence[str] | None = None,
        chunk_rows: int | None = None,
        parallelism: int | None = None,
        max_reject_share: float | None = None,
    ) -> dict[str, Any]:
        """Start scoring every row of `input` (a path, artifacts:..., s3://bucket/key or az://..., CSV or Parquet,
        one file or a prefix) with `name`'s `version` (default: production, resolved now) into Parquet parts and a
        manifest under `output`; the job as the API shows it (id, status, progress)."""
        body: dict[str, Any] = {"input": input, "output": output}
        options = {"version": version, "input_format": input_format, "chunk_rows": chunk_rows,
                   "parallelism": parallelism, "max_reject_share": max_reject_share}  # fmt: skip
        body.update({k: v for k, v in options.items() if v is not None})
        if passthrough:
            body["passthrough"] = list(passthrough)
        return self._json("POST", f"{API}/models/{name}/batch-jobs/", body=body)

    def batch_job_status(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"{API}/batch-jobs/{job_id}/")

    def batch_job_cancel(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"{API}/batch-jobs/{job_id}/cancel/")

    def wait_for_batch_job(self, job_id: int, timeout: float = 24 * 3600, poll: float = 2.0) -> dict[str, Any]:
        """Poll until the job succeeded, failed or was cancelled and return it; ModelworksError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.batch_job_status(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() >= deadline:
                raise ModelworksError(f"batch job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    # --- Feedback, business events, features, monitoring ----------------------------------------------------------

    def feedback(
        self,
        request_id: str | None = None,
        actual: Any = None,
        *,
        routing_key: str | None = None,
        model: str | None = None,
        time: dt.datetime | str | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> dict[str, int]:
        """Ground truth for a prediction (by its request_id, or routing_key + time), or a batch as `items`."""
        if items is None:
            item = {"request_id": request_id, "routing_key": routing_key, "model": model, "time": time,
                    "actual": plain(actual)}  # fmt: skip
            items = [{k: v for k, v in item.items() if v is not None}]
        return self._json("POST", f"{API}/feedback", body={"items": items})

    def events(
        self,
        key: str | None = None,
        name: str | None = None,
        value: float = 1.0,
        *,
        time: dt.datetime | str | None = None,
        event_id: str | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> dict[str, int]:
        """Business events (a purchase, a click) for a routing key, which experiments count as conversions."""
        if items is None:
            item = {"key": key, "name": name, "value": value, "time": time, "event_id": event_id}
            items = [{k: v for k, v in item.items() if v is not None}]
        return self._json("POST", f"{API}/events", body={"items": items})

    def push_features(self, view: str, rows: pd.DataFrame | Sequence[dict[str, Any]]) -> dict[str, int]:
        """Write rows to a feature view, all or none: {"stored", "online"} (online: entities that got a newer value).

        Each row holds the entity's join key, `event_timestamp` and features, and optionally the view's created-
        timestamp column (`created_timestamp` unless the view names another; without it a value is created when
        written). Times may be datetimes, pandas Timestamps or ISO-8601 text of any precision (naive means UTC), or
        epoch seconds; the server reads them all with one parser. A refusal (ApiError, 400) names each bad row and
        field; at most the server's MODELWORKS_FEATURES_MAX_ROWS rows per call."""
        records = _records(rows) if _is_frame(rows) else [dict(row) for row in rows]
        return self._json("POST", f"{API}/features/{view}/push", body={"rows": records})

    def historical_features(
        self,
        entity_df: pd.DataFrame,
        features: list[str],
        *,
        as_of_created: bool = False,
        timestamp_column: str = "event_timestamp",
    ) -> pd.DataFrame:
        """Point-in-time training data: `entity_df` (join keys and a timestamp per row) with one column per
        "view:feature" appended, each value as of its row's time (None where nothing qualifies)."""
        import pandas as pd

        body = {
            "entity_rows": _records(entity_df),
            "features": list(features),
            "as_of_created": as_of_created,
            "timestamp_column": timestamp_column,
        }
        answer = self._json("POST", f"{API}/features/historical/", body=body)
        table = pd.DataFrame(answer["rows"], columns=answer["columns"])
        result = entity_df.copy()
        for ref in features:
            result[ref] = table[ref].to_numpy()
        return result

    def drift_report(self, monitor: int | str) -> DriftReport | None:
        """The monitor's latest drift report (by monitor id, or name), or None before its first run."""
        monitor_id = monitor if isinstance(monitor, int) else self._monitor_id(str(monitor))
        page = self._json("GET", f"{API}/monitors/{monitor_id}/reports", params={"limit": 1})
        results = page.get("results", []) if isinstance(page, dict) else page
        return DriftReport.from_api(results[0]) if results else None

    def _monitor_id(self, name: str) -> int:
        if name.isdigit():
            return int(name)
        for found in self._pages(f"{API}/monitors"):
            if found.get("name") == name:
                return int(found["id"])
        raise NotFound(404, "GET", f"{API}/monitors", {"detail": f"no monitor named {name!r}"})


def _library_versions() -> dict[str, str]:
    """The client side's versions, recorded with the version (the server adds what the skops archive records)."""
    found = {"python": platform.python_version()}
    for module, name in (("sklearn", "scikit-learn"), ("skops", "skops"), ("numpy", "numpy")):
        try:
            found[name] = str(__import__(module).__version__)
        except (ImportError, AttributeError):
            continue
    return found


@dataclass(frozen=True)
class AsyncPrediction:
    """A queued prediction (`Client.predict_async`): its id for `Client.prediction`, the request id it is logged
    under, and the secret its callback is signed with (Standard Webhooks), when it has one."""

    id: str
    request_id: str
    callback_secret: str | None = None


def _prediction_frame(answers: list[dict[str, Any]], index: Any) -> pd.DataFrame:
    """The answers of the predict endpoint as one DataFrame (`Client.predict`)."""
    import pandas as pd

    frame = pd.DataFrame({"prediction": [p for a in answers for p in a["predictions"]]})
    classes = answers[0].get("classes")
    if answers[0].get("probabilities") is not None and classes:
        probabilities = [p for a in answers for p in a["probabilities"]]
        for position, label in enumerate(classes):
            frame[f"proba_{label}"] = [row[position] for row in probabilities]
    versions = sorted({a["version"] for a in answers})
    if len(versions) > 1:
        frame["version"] = [a["version"] for a in answers for _ in a["predictions"]]
    if index is not None and len(index) == len(frame):
        frame.index = index
    frame.attrs.update(model=answers[0]["model"], version=versions[0] if len(versions) == 1 else versions,
                       request_ids=[a["request_id"] for a in answers], route=answers[0].get("route"))  # fmt: skip
    return frame
