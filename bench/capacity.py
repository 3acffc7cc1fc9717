"""Scale-out limits, measured: what one web pod costs the shared Postgres and Redis, and what Postgres can take.

How it measures (all on this machine, loopback only)
1. One web pod as deployed (gunicorn with platform/gunicorn.conf.py, DEBUG off, Postgres, Redis, API keys, the
   prediction log) on a fresh `modelworks_bench` database seeded with the demo; wrk drives the logistic regression
   at 64 connections (prediction cache off, so every request runs the model). Every 0.5 s the script samples the
   Postgres connections open to the database (pg_stat_activity) and Redis's connected clients; it reports the
   request rate and the peaks.
2. The prediction log's write path alone: `serving.prediction_log.insert` (the flusher's one COPY per
   batch of 1,000) writing realistic rows (30 features, outputs, ids) into the same database, from 1 and from 4
   threads (each its own connection, as 4 web processes would), for a fixed number of rows: rows/s.
3. Postgres's `max_connections`.
From these: how many pods' worth of traffic one Postgres can log, and how many pods fit its connection limit.
Results on stdout and in bench/results/capacity-<UTC timestamp>.json. Run: bench/capacity.sh.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_serving"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)


def sample(stop: threading.Event, pg: list[int], redis_clients: list[int]) -> None:
    import psycopg2
    import redis

    conn = psycopg2.connect(**bench.DB_ADMIN, connect_timeout=5)
    conn.autocommit = True
    client = redis.Redis.from_url(bench.REDIS_URL)
    while not stop.is_set():
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [bench.DB_NAME])
            pg.append(cur.fetchone()[0])
        redis_clients.append(int(client.info("clients")["connected_clients"]))
        stop.wait(0.5)
    conn.close()


def one_pod(seconds: int, procs) -> dict:
    key = bench.prepare_platform()
    bodies = bench.write_bodies(bench.test_rows())
    port = bench.free_port()
    cmd, config = bench.gunicorn_cmd(port)
    log = bench.LOGS / "capacity-gunicorn.txt"
    proc = procs.start(cmd, env=bench.platform_env(cache=False), log=log)
    pg: list[int] = []
    clients: list[int] = []
    stop = threading.Event()
    try:
        bench.wait_ready(proc, port, "/healthz", log)
        model = "breast-cancer-logreg"
        target = bench.Target("capacity", model, port, f"/api/v1/models/{model}/predict", bodies["platform"],
                              f"Api-Key {key}")  # fmt: skip
        opts = bench.parse_args(["--duration", str(seconds), "--warmup", "3"])
        bench.wrk(target, 64, 3, opts, "warm-up")
        sampler = threading.Thread(target=sample, args=(stop, pg, clients))
        sampler.start()
        run = bench.wrk(target, 64, seconds, opts, "measured")
    finally:
        stop.set()
        procs.stop(proc, group=False, grace=60)
    return {"gunicorn": config, "rps": run.rps, "p99_ms": run.p99_ms, "errors": run.errors,
            "postgres_connections_peak": max(pg), "postgres_connections_median": statistics.median(pg),
            "redis_clients_peak": max(clients)}  # fmt: skip


def log_rows(count: int) -> list:
    from django.utils import timezone

    from serving.prediction_log import LogEntry

    features = {f"feature {i}": 12.345 + i for i in range(30)}
    now = timezone.now()
    return [
        LogEntry(request_id=uuid.uuid4().hex, model_name="breast-cancer-logreg", version=1, routing_key="user-42",
                      inputs=[features], outputs={"predictions": [1], "probabilities": [[0.1, 0.9]]}, latency_ms=1.5,
                      cached=False, route_reason="alias:production", outcome="ok", created_at=now)
        for _ in range(count)
    ]  # fmt: skip


def insert_rate(total: int, threads: int) -> float:
    from django.db import connection

    from serving.prediction_log import insert

    batches = [log_rows(1000) for _ in range(total // 1000)]
    chunks = [batches[i::threads] for i in range(threads)]

    def write(mine):
        try:
            for batch in mine:
                insert(batch)
        finally:
            connection.close()

    workers = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return total / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="measured wrk run")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per insert measurement")
    opts = parser.parse_args(argv)
    procs = bench.Processes()
    try:
        pod = one_pod(opts.seconds, procs)
    finally:
        procs.stop_all()
    os.environ.update(bench.platform_env(cache=False))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW max_connections")
        max_connections = int(cur.fetchone()[0])
    rates = {threads: insert_rate(opts.rows, threads) for threads in (1, 4)}
    per_pod_connections = pod["postgres_connections_peak"]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "one_pod": pod,
        "log_insert_rows_per_s": {f"{k}_threads": v for k, v in rates.items()},
        "postgres_max_connections": max_connections,
        "pods_by_log_writes": max(rates.values()) / pod["rps"],
        "pods_by_connections": max_connections / per_pod_connections,
        "db_conn_max_age": os.environ.get("DB_CONN_MAX_AGE", "60 (default)"),
        "load_average": os.getloadavg(),
    }
    print(f"one web pod (2 gunicorn workers), logistic regression, c=64, cache off: "
          f"{pod['rps']:,.0f} req/s, p99 {pod['p99_ms']:.0f} ms, {pod['errors']} errors")  # fmt: skip
    print(f"  Postgres connections to the database: peak {per_pod_connections}, median "
          f"{pod['postgres_connections_median']:.0f}; Redis clients peak {pod['redis_clients_peak']}")  # fmt: skip
    print(f"prediction-log inserts (batches of 1,000): {rates[1]:,.0f} rows/s from 1 thread, {rates[4]:,.0f} from 4")
    print(f"Postgres max_connections {max_connections}")
    print(f"=> one Postgres logs about {report['pods_by_log_writes']:.0f} such pods' traffic; its connection limit "
          f"allows about {report['pods_by_connections']:.0f} pods without a pooler")  # fmt: skip
    bench.RESULTS.mkdir(exist_ok=True)
    out = bench.RESULTS / f"capacity-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
