"""Liveness and readiness for load balancers and Kubernetes: unauthenticated, cheap, no secrets in the answer.

Readiness means "this pod can answer predictions". What does not stop that is reported in the details with a 200
and `"status": "degraded"`: Redis away (the prediction cache misses), a production model that cannot be loaded (its
own requests answer 503; metric modelworks_model_load_failed and an alert say so; it is retried after a back-off,
not by every probe). Only a pod that cannot route a prediction answers 503.

Every check that talks to a dependency runs on its own thread and /readyz waits for all of them together at most
MODELWORKS_READYZ_BUDGET_MS, so a hung Redis or Postgres (SIGSTOP, a dropped network) answers "timeout" well within
the probe's 3 s instead of hanging the probe. A check still running from an earlier probe is waited on again rather
than started twice, so a hung dependency never piles up threads or connections.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any

import psycopg2
import redis
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse

from serving import routing
from serving.model_cache import model_cache
from serving.warmup import load_production_models

logger = logging.getLogger(__name__)

Check = dict[str, Any]  # {"status": "ok" | "error" | "timeout", "detail": ..., ...}

# Each dependency's own bound, shorter than the whole budget (libpq's connect_timeout cannot go below 2 s: the
# thread's deadline, not the socket, bounds a hung Postgres).
REDIS_TIMEOUT_S = 0.3
DB_CONNECT_TIMEOUT_S = 2
DB_STATEMENT_TIMEOUT_MS = 500


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers: nothing else is checked, so a slow database never gets a pod restarted."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to take traffic: this pod can route and answer predictions (see the module docstring)."""
    checks = run_checks(
        {"database": check_database, "cache": check_cache, "models": check_models},
        budget_seconds=settings.MODELWORKS_READYZ_BUDGET_MS / 1000,
    )
    checks["routes"] = check_routes(checks["database"])
    checks["onnx"] = check_onnx()
    ready = checks["routes"]["status"] in ("ok", "degraded")
    healthy = all(check["status"] == "ok" for check in checks.values())
    status = "ok" if healthy else "degraded" if ready else "unready"
    return JsonResponse({"ready": ready, "status": status, "checks": checks}, status=200 if ready else 503)


def check_routes(database: Check) -> Check:
    """Whether predictions can be routed: from the database, or, while it does not answer, from the last good routes
    held in memory (serving/routing.py) for at most MODELWORKS_ROUTE_MAX_STALE_SECONDS."""
    if database["status"] == "ok":
        return {"status": "ok"}
    held, stale, bound = routing.routes_in_memory(), routing.staleness_seconds(), routing.max_stale_seconds()
    if held and stale <= bound:
        return {"status": "degraded", "stale_seconds": round(stale, 1), "max_stale_seconds": bound,
                "detail": f"the database does not answer: {held} routes served from memory"}  # fmt: skip
    return {"status": "error", "detail": "the database does not answer and no route younger than "
                                         f"{bound:.0f} s is held in memory"}  # fmt: skip


def check_onnx() -> Check:
    """Which onnxruntime providers ONNX sessions use here (CUDA when onnxruntime-gpu sees a GPU, else the CPU). A
    process that has loaded no ONNX model has not imported onnxruntime (about 20 MB) and says so."""
    if "onnxruntime" not in sys.modules:
        return {"status": "ok", "detail": "no ONNX model loaded in this process"}
    from registry import onnx_tools

    return {"status": "ok", "providers": onnx_tools.providers(), "available": onnx_tools.available_providers()}


def check_database() -> Check:
    """A fresh connection (never one a request thread holds) and SELECT 1, each with a short timeout."""
    params = connections["default"].settings_dict
    if not params["ENGINE"].endswith("postgresql"):  # the embedded SQLite file: this thread's own connection
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"status": "ok"}
    options = dict(params.get("OPTIONS", {}))  # sslmode, certificates...: what the app's own connections use
    options["connect_timeout"] = DB_CONNECT_TIMEOUT_S
    options["options"] = f"{options.get('options', '')} -c statement_timeout={DB_STATEMENT_TIMEOUT_MS}".strip()
    conn = psycopg2.connect(
        dbname=params["NAME"],
        user=params["USER"] or None,
        password=params["PASSWORD"] or None,
        host=params["HOST"] or None,
        port=params["PORT"] or None,
        **options,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        conn.close()
    return {"status": "ok"}


_redis_clients: dict[str, redis.Redis] = {}


def check_cache() -> Check:
    """Redis answers a PING within REDIS_TIMEOUT_S. When it does not, serving goes on without it: degraded."""
    config = settings.CACHES["default"]
    if "redis" not in config["BACKEND"].lower():
        return {"status": "ok", "detail": "in-process cache"}
    location = config["LOCATION"]
    client = _redis_clients.get(location)
    if client is None:
        client = redis.Redis.from_url(location, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        _redis_clients[location] = client
    try:
        client.ping()
    except redis.RedisError as exc:
        return {"status": "error", "detail": f"Redis does not answer ({type(exc).__name__}): predictions are served "
                                             "without the prediction cache"}  # fmt: skip
    return {"status": "ok"}


def check_models() -> Check:
    """Every production version is loaded here, or (when one cannot be) which and why: that model's requests
    answer 503, the others are served, so this never makes the pod unready."""
    states = load_production_models()
    failed = {name: state for name, state in states.items() if state != "loaded"}
    other = {f"{f.model_name} v{f.version}": f.reason for f in model_cache().failures()}
    other = {name: reason for name, reason in other.items() if name not in failed}
    check: Check = {"status": "error" if failed else "ok", "loaded": sorted(set(states) - set(failed))}
    if failed:
        check["failed"] = failed
    if other:
        check["other_failed"] = other  # versions pinned by callers, not production, that cannot be loaded
    return check


_running: dict[str, tuple[float, Future]] = {}
_running_lock = threading.Lock()


def run_checks(checks: dict[str, Callable[[], Check]], *, budget_seconds: float) -> dict[str, Check]:
    """Run the checks concurrently; answer each one's result, or "timeout" for those still running at the end of
    the budget (they go on in the background and a later probe picks up their answer)."""
    started = {name: _start(name, check) for name, check in checks.items()}
    wait([future for _, future in started.values()], timeout=budget_seconds)
    results = {}
    for name, (since, future) in started.items():
        if future.done():
            results[name] = future.result()
        else:
            results[name] = {"status": "timeout", "detail": f"no answer after {time.monotonic() - since:.1f} s"}
    return results


def _start(name: str, check: Callable[[], Check]) -> tuple[float, Future]:
    with _running_lock:
        running = _running.get(name)
        if running is not None and not running[1].done():
            return running
        future: Future = Future()
        running = _running[name] = (time.monotonic(), future)
    threading.Thread(target=_run, args=(check, future), name=f"readyz-{name}", daemon=True).start()
    return running


def _run(check: Callable[[], Check], future: Future) -> None:
    try:
        future.set_result(check())
    except Exception as exc:  # a check's failure is its answer; the answer is public, so the message goes to the log
        logger.warning("readiness check failed", exc_info=True)
        future.set_result({"status": "error", "detail": type(exc).__name__})
    finally:
        connections.close_all()  # this thread's own connections (the models check queries through the ORM)
