"""The platform's own Prometheus metrics for serving. Labels stay bounded: model, version, outcome; never ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "modelworks_predictions_total", "Prediction requests by model, version and outcome", ["model", "version", "outcome"]
)
PREDICTION_ROWS = Counter("modelworks_prediction_rows_total", "Rows predicted", ["model", "version"])
LATENCY = Histogram(
    "modelworks_prediction_latency_seconds",
    "End-to-end prediction latency inside the web process",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "modelworks_batch_rows",
    "Rows per model call after micro-batching",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CACHE = Counter("modelworks_prediction_cache_total", "Prediction cache lookups per row", ["model", "result"])
ONNX_PROVIDER = Gauge(
    "modelworks_onnx_provider",
    "1 for each onnxruntime execution provider the loaded ONNX sessions run on (CUDAExecutionProvider, CPU...)",
    ["provider"],
)
BREAKER_STATE = Gauge(
    "modelworks_circuit_breaker_state",
    "Circuit breaker per version: 0 closed, 1 half-open, 2 open",
    ["model", "version"],
)
MODEL_LOAD_SECONDS = Histogram(
    "modelworks_model_load_seconds", "Time to fetch, verify and load a model version", ["model"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
MODEL_LOAD_FAILURES = Counter(
    "modelworks_model_load_failures_total", "Attempts to load a model version that failed", ["model", "version"]
)
MODEL_LOAD_FAILED = Gauge(
    "modelworks_model_load_failed",
    "1 while a version cannot be loaded in a process (its requests answer 503, or 409 when pinned), 0 once it loads",
    ["model", "version"],
    multiprocess_mode="livemax",
)
LOG_BUFFER_DEPTH = Gauge(
    "modelworks_prediction_log_buffer_depth", "Predictions waiting to be logged", multiprocess_mode="livesum"
)
LOG_WRITTEN = Counter("modelworks_prediction_log_written_total", "Predictions written to the log")
LOG_DROPPED = Counter("modelworks_prediction_log_dropped_total", "Predictions dropped because the buffer was full")
LOG_BUFFER_BYTES = Gauge(
    "modelworks_prediction_log_buffer_bytes", "Estimated memory of predictions waiting", multiprocess_mode="livesum"
)
LOG_DEAD_LETTERS = Counter(
    "modelworks_log_dead_letters_total", "Buffered rows the database refused for their content", ["source"]
)
LOG_DEAD_LETTERS_DROPPED = Counter(
    "modelworks_log_dead_letters_dropped_total",
    "Dead letters lost: the database was away and the dead-letter file was at its cap (or could not be written)",
    ["source"],
)
SHADOW = Counter(
    "modelworks_shadow_predictions_total", "Mirrored requests scored by a shadow version", ["model", "outcome"]
)
HTTP_RESPONSES = Counter(
    "modelworks_http_responses_total", "Answers of the ASGI front (serving/front.py) by handler and status code",
    ["handler", "code"],
)  # fmt: skip
CLIENT_REFUSALS = Counter(
    "modelworks_http_client_refusals_total",
    "Requests the web worker answered itself: 408 for slow headers or body, 503 over the connection cap",
    ["reason"],
)
OOD_ROWS = Counter(
    "modelworks_ood_rows_total",
    "Rows scored against their version's reference profile: flagged (outside it), refused (422)",
    ["model", "version", "result"],
)
CACHE_ERRORS = Counter("modelworks_cache_errors_total", "Cache calls that failed: Redis timed out or refused")
CACHE_SKIPPED = Counter(
    "modelworks_cache_skipped_total", "Cache calls not attempted because Redis failed within the back-off"
)
THROTTLE_LOCAL = Counter(
    "modelworks_throttle_local_total", "Rate-limit checks made per process because the shared cache was unavailable"
)
ROUTE_STALENESS = Gauge(
    "modelworks_route_staleness_seconds",
    "Age of the oldest route served from memory because the database did not answer (0: all fresh)",
    multiprocess_mode="livemax",
)
# Asynchronous predictions (serving/asynchronous.py). Their backlog is modelworks_celery_queue_length{queue=
# MODELWORKS_ASYNC_QUEUE}, exported by the workers that consume it (config/celery_metrics.py); how long requests
# waited in it is this histogram, observed by the worker as it starts each one.
ASYNC_PREDICTIONS = Counter(
    "modelworks_async_predictions_total", "Asynchronous predictions queued (web) and finished (worker)", ["status"]
)
ASYNC_WAIT = Histogram(
    "modelworks_async_prediction_wait_seconds", "Time an asynchronous prediction waited in the queue",
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)  # fmt: skip
