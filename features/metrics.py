"""Feature store metrics. Labels stay bounded: view names (defined by admins, like model names), fixed sources."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SOURCES = ("request", "online", "on_demand", "offline", "missing")

FEATURE_VALUES = Counter(
    "modelworks_feature_values_total", "Feature values answered by online reads, by view and where they came from",
    ["view", "source"],
)  # fmt: skip
ONLINE_READ_SECONDS = Histogram(
    "modelworks_feature_online_read_seconds", "get_online_features latency inside the process",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)  # fmt: skip
VALUES_WRITTEN = Counter("modelworks_feature_values_written_total", "Values stored offline", ["view", "path"])
ONLINE_UNAVAILABLE = Counter(
    "modelworks_feature_online_unavailable_total",
    "Online reads answered without the online store (Redis failed: error; skipped within the back-off after a "
    "failure: skipped); their values came from on-demand functions and the offline store",
    ["reason"],
)
DATABASE_UNAVAILABLE = Counter(
    "modelworks_feature_database_unavailable_total",
    "Feature reads answered without the database (read: views, online, offline; reason: error, or timeout on the "
    "request processor's thread): last good view definitions, or the values missing",
    ["read", "reason"],
)
