"""Models loaded in this process, by version: integrity-checked on load, bounded by a memory budget (LRU).

Each loaded model owns its circuit breaker, so it lives and dies with it. There is no per-version thread: the ASGI
front's rounds batch concurrent requests (serving/front.py), and the Django path calls the model inline.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from sklearn.compose import ColumnTransformer
from sklearn.tree import BaseDecisionTree

from registry import services as registry
from registry.artifacts import ArtifactError, OnnxModel
from registry.models import ModelVersion
from serving import fast_paths, metrics
from serving.breaker import STATE_VALUE, BreakerPolicy, CircuitBreaker
from serving.per_process import PerProcess
from serving.validation import FLOAT32_MAX, FLOAT64_MAX

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    version_id: int
    model_name: str
    version: int
    estimator: Any
    signature: dict[str, Any]
    size_bytes: int
    cache_key: str  # version id + artifact hash: what prediction-cache entries are filed under
    needs_frame: bool  # columns picked by name or non-numeric features: the model must get a DataFrame
    breaker: CircuitBreaker
    runtime: str = "sklearn"  # what computes its answers (ModelVersion.runtime): a change reloads it
    float_limit: float = FLOAT64_MAX  # the largest input magnitude the model computes with (see input_float_limit)
    _batch_sizes: Any = field(default=None, repr=False)  # modelworks_batch_size's child for this model
    _exported_state: str | None = field(default=None, repr=False)

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.signature["inputs"]]

    @property
    def classes(self) -> list[Any] | None:
        return self.signature.get("outputs", {}).get("classes")

    def predict(self, rows: list[list[Any]]) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (and class probabilities for classifiers) for rows in signature order, as JSON values."""
        predictions, probabilities = self.predict_arrays(self._matrix(rows))
        return predictions.tolist(), None if probabilities is None else probabilities.tolist()

    def predict_arrays(self, X: Any, rest: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and (classifiers) probabilities of a model input (an array or a DataFrame) as arrays:
        the hot path and batch scoring share this, so both answer the same floats. `rest`: the part of the model
        still to apply, when the caller has applied its leading steps to X itself (fast_paths.leading_scalers)."""
        model = self.estimator if rest is None else rest
        if self.classes is None or not hasattr(model, "predict_proba"):
            return np.asarray(model.predict(X)), None
        if isinstance(model, OnnxModel):  # labels and probabilities from one run of the graph
            labels, probabilities = model.predict_with_proba(X)
            return np.asarray(labels), np.asarray(probabilities, dtype=float)
        probabilities = np.asarray(fast_paths.predict_proba(model, X), dtype=float)
        if _predicts_by_argmax(self.estimator):
            # These estimators' predict() is exactly classes_[argmax(predict_proba)]: skip the second pass.
            predictions = np.asarray(self.estimator.classes_)[probabilities.argmax(axis=1)]
        else:
            predictions = np.asarray(model.predict(X))
        return predictions, probabilities

    def _matrix(self, rows: list[list[Any]]) -> Any:
        if self.needs_frame:
            return pd.DataFrame(rows, columns=self.feature_names)
        # Rows are already in the model's feature order (checked at registration), so a plain array is the same
        # input without the cost of building a DataFrame per batch.
        return np.asarray(rows, dtype=float)

    def record_call(self, rows: int) -> None:
        """Count one model call of this many rows (the batch-size histogram: rows per call)."""
        if self._batch_sizes is None:
            self._batch_sizes = metrics.BATCH_SIZE.labels(self.model_name)
        self._batch_sizes.observe(rows)

    def breaker_state(self) -> str:
        """The breaker's state, exported as a gauge when it changed (a gauge write per request costs time)."""
        state = self.breaker.state
        if state != self._exported_state:
            metrics.BREAKER_STATE.labels(self.model_name, str(self.version)).set(STATE_VALUE[state])
            self._exported_state = state
        return state


def needs_frame(estimator: Any, signature: dict[str, Any]) -> bool:
    """A DataFrame is needed when a feature is not numeric or a step selects columns by name."""
    if not hasattr(estimator, "feature_names_in_"):
        return False
    if any(f["dtype"] == "category" for f in signature["inputs"]):
        return True
    parts = [estimator, *(estimator.get_params(deep=True).values() if hasattr(estimator, "get_params") else [])]
    return any(isinstance(part, ColumnTransformer) for part in parts)


def input_float_limit(estimator: Any) -> float:
    """FLOAT32_MAX when the model casts its inputs to float32 (decision trees and the ensembles built of them,
    ONNX float tensors), where a larger finite float64 makes it raise: validation refuses such values instead."""
    parts = [estimator, *(estimator.get_params(deep=True).values() if hasattr(estimator, "get_params") else [])]
    for part in parts:
        members = getattr(part, "estimators_", None)  # a forest's list, gradient boosting's array of trees
        first = np.ravel(np.asarray(members, dtype=object))[0] if members is not None and len(members) else None
        if isinstance(part, BaseDecisionTree | OnnxModel) or isinstance(first, BaseDecisionTree):
            return FLOAT32_MAX
    return FLOAT64_MAX


ARGMAX_CLASSIFIERS = frozenset(
    {
        "LogisticRegression",
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "GradientBoostingClassifier",
        "HistGradientBoostingClassifier",
    }
)


def _predicts_by_argmax(estimator: Any) -> bool:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return type(final).__name__ in ARGMAX_CLASSIFIERS and hasattr(estimator, "classes_")


def breaker_policy_for(version: ModelVersion) -> BreakerPolicy:
    policy = getattr(version.model, "serving_policy", None)
    if policy is None:
        return BreakerPolicy()
    return BreakerPolicy(
        consecutive_failures=policy.breaker_consecutive_failures,
        error_rate=policy.breaker_error_rate,
        window_seconds=policy.breaker_window_seconds,
        min_requests=policy.breaker_min_requests,
        cooldown_seconds=policy.breaker_cooldown_seconds,
    )


@dataclass
class LoadFailure:
    """A version whose artifact could not be loaded in this process, and when loading it is tried again."""

    model_name: str
    version: int
    fingerprint: tuple[str, str, str]  # what was loaded: a version whose artifact record changed is tried at once
    reason: str
    attempts: int
    retry_at: float  # time.monotonic()

    @property
    def message(self) -> str:
        return f"{self.model_name} v{self.version} cannot be loaded: {self.reason}"

    def retry_after(self) -> int:
        """Whole seconds until the next load attempt (at least 1), for a Retry-After header."""
        return max(1, math.ceil(self.retry_at - time.monotonic()))


class ModelLoadFailed(Exception):
    """The version cannot be loaded now; raised at once, without a new attempt, until its back-off has passed."""

    def __init__(self, failure: LoadFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.message = failure.message

    @property
    def retry_after(self) -> int:
        return self.failure.retry_after()


def _fingerprint(version: ModelVersion) -> tuple[str, str, str]:
    return (version.sha256 + version.onnx_sha256, version.artifact_path, f"{version.format}:{version.runtime}")


def _reason(exc: Exception) -> str:
    """Why a load failed, in words for the caller: no paths, hashes or tracebacks (those go to the log)."""
    if isinstance(exc, registry.ArtifactIntegrityError):
        return "its artifact does not match the registered sha256 (tampered or corrupted); it will not be loaded"
    if isinstance(exc, FileNotFoundError):
        return "its artifact is missing from the artifact storage"
    if isinstance(exc, ArtifactError):
        return f"its artifact cannot be loaded: {exc}"
    return f"loading it failed ({type(exc).__name__})"


def retry_delay(attempts: int) -> float:
    """Back-off after the n-th failed load in a row: MODELWORKS_MODEL_RETRY_S, doubling up to ..._RETRY_MAX_S."""
    return min(settings.MODELWORKS_MODEL_RETRY_S * 2 ** (attempts - 1), settings.MODELWORKS_MODEL_RETRY_MAX_S)


class ModelCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}
        self._failures: dict[int, LoadFailure] = {}

    def __contains__(self, version_id: int) -> bool:
        return version_id in self._models

    def get(self, version: ModelVersion) -> LoadedModel:
        loaded = self._models.get(version.pk)
        if loaded is not None and loaded.runtime == version.runtime:
            with self._lock:
                if version.pk in self._models:
                    self._models.move_to_end(version.pk)
            return loaded
        with self._lock:
            gate = self._loading.setdefault(version.pk, threading.Lock())
        with gate:  # one load per version even when many requests ask at once
            loaded = self._models.get(version.pk)
            if loaded is None or loaded.runtime != version.runtime:  # new, or its runtime changed since it loaded
                loaded = self._load_or_fail(version)
                with self._lock:
                    self._models[version.pk] = loaded
                    self._evict()
        return loaded

    def failures(self) -> list[LoadFailure]:
        """The versions that could not be loaded here (and have not loaded since)."""
        return list(self._failures.values())

    def _load_or_fail(self, version: ModelVersion) -> LoadedModel:
        """Load the version, unless it failed lately: a broken artifact is not fetched and parsed again for every
        request and every readiness probe, only once its back-off has passed (or its artifact record changed)."""
        failure = self._failures.get(version.pk)
        if failure is not None and failure.fingerprint == _fingerprint(version) and time.monotonic() < failure.retry_at:
            raise ModelLoadFailed(failure)
        try:
            loaded = self._load(version)
        except Exception as exc:
            same = failure is not None and failure.fingerprint == _fingerprint(version)
            attempts = failure.attempts + 1 if same else 1
            failure = LoadFailure(version.model.name, version.version, _fingerprint(version), _reason(exc), attempts,
                                  time.monotonic() + retry_delay(attempts))  # fmt: skip
            self._failures[version.pk] = failure
            labels = (failure.model_name, str(failure.version))
            metrics.MODEL_LOAD_FAILURES.labels(*labels).inc()
            metrics.MODEL_LOAD_FAILED.labels(*labels).set(1)
            logger.error("could not load %s (attempt %d, next in %.0fs)", version, attempts,
                         failure.retry_at - time.monotonic(), exc_info=exc)  # fmt: skip
            raise ModelLoadFailed(failure) from exc
        if self._failures.pop(version.pk, None) is not None:
            metrics.MODEL_LOAD_FAILED.labels(loaded.model_name, str(loaded.version)).set(0)
        return loaded

    def _load(self, version: ModelVersion) -> LoadedModel:
        started = time.perf_counter()
        estimator = registry.model_version_load(version, version.runtime)
        converted = version.runtime == "onnx" and version.format != "onnx"
        loaded = LoadedModel(
            version_id=version.pk,
            model_name=version.model.name,
            version=version.version,
            estimator=estimator,
            signature=version.signature,
            size_bytes=version.onnx_size_bytes if converted else version.size_bytes,
            cache_key=f"{version.pk}:{(version.onnx_sha256 if converted else version.sha256)[:16]}",
            needs_frame=needs_frame(estimator, version.signature),
            breaker=CircuitBreaker(breaker_policy_for(version)),
            runtime=version.runtime,
            float_limit=input_float_limit(estimator),
        )
        if isinstance(estimator, OnnxModel):
            for provider in estimator.providers:
                metrics.ONNX_PROVIDER.labels(provider).set(1)
        elapsed = time.perf_counter() - started
        metrics.MODEL_LOAD_SECONDS.labels(loaded.model_name).observe(elapsed)
        logger.info("loaded %s (%s) in %.3fs", version, version.runtime, elapsed)
        return loaded

    def _evict(self) -> None:
        total = sum(m.size_bytes for m in self._models.values())
        while total > self.budget_bytes and len(self._models) > 1:
            _, evicted = self._models.popitem(last=False)  # a request holding it still gets its answer
            total -= evicted.size_bytes
            logger.info("evicted %s v%s from the model cache", evicted.model_name, evicted.version)


# This process's cache: `model_cache()`.
model_cache = PerProcess(lambda: ModelCache(settings.MODELWORKS_MODEL_CACHE_MB * 1024 * 1024))
