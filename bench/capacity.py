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
4. The log before and after day partitioning (serving/migrations/0012), in one run, on its own database
   (`modelworks_bench_log`): migrated to serving 0009 (today's one table), filled with --log-rows rows (10M by
   default: 30 days of traffic, 20 model versions, a rollout's two arms, 30-feature inputs, written server-side), then
   measured: rows/s from 1, 4 and 8 concurrent writers (`insert`, batches of 1,000, each writer its own connection),
   the window queries the platform runs (the monitor's 24-hour drift window of one version, a rollout arm's hour,
   the traffic rollup's 15 minutes, feedback matching by key; median of 5 after a warm-up) and retention of one day.
   Then `migrate serving` (timed: it copies every row into day partitions) and the same measurements again.
Results on stdout and in bench/results/capacity-<UTC timestamp>.json. Run: bench/capacity.sh
(`--log-only` skips 1-3; `--log-rows 300000` for a quick look).
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


LOG_DB = "modelworks_bench_log"
FEATURES = {f"feature {i}": 12.345 + i for i in range(30)}
DAYS = 30


def recreate_log_database() -> None:
    import psycopg2

    conn = psycopg2.connect(**bench.DB_ADMIN, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {LOG_DB} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {LOG_DB}")
    finally:
        conn.close()


def fill(total: int) -> tuple[datetime, float]:
    """`total` rows spread over the last DAYS days, generated by Postgres (a COPY from Python would take an hour);
    seconds taken. Ten models of two versions each; one request in five is a rollout's (two arms)."""
    from django.db import connection

    sql = """
        INSERT INTO serving_predictionlog (request_id, retry_key, model_name, version, routing_key, inputs, outputs,
            latency_ms, cached, route_reason, outcome, created_at, caller)
        SELECT md5(g::text), '', 'model-' || (g %% 10), 1 + (g / 10) %% 2,
            CASE WHEN g %% 3 = 0 THEN 'user-' || (g %% 5000) ELSE '' END, %s::jsonb,
            '{"predictions": [1], "probabilities": [[0.1, 0.9]]}'::jsonb, 1.5 + (g %% 7), false,
            CASE (g / 20) %% 10 WHEN 0 THEN 'rollout:1:candidate' WHEN 1 THEN 'rollout:1:baseline'
                 ELSE 'alias:production' END,
            CASE WHEN g %% 97 = 0 THEN 'error' ELSE 'ok' END, %s::timestamptz - (g::float8 / %s) * %s::interval, ''
        FROM generate_series(%s, %s) g
    """
    now = datetime.now(UTC)
    started = time.perf_counter()
    with connection.cursor() as cur:  # indexes built once after the fill, not maintained row by row
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'serving_predictionlog'")
        indexes = cur.fetchall()
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = 'serving_predictionlog'::regclass AND contype IN ('p', 'u')")  # fmt: skip
        constraints = cur.fetchall()
        for name, _ in constraints:
            cur.execute(f"ALTER TABLE serving_predictionlog DROP CONSTRAINT {name}")
        for name, _ in indexes:
            cur.execute(f"DROP INDEX IF EXISTS {name}")
    step = 1_000_000
    for first in range(0, total, step):
        with connection.cursor() as cur:
            cur.execute(sql, [json.dumps([FEATURES]), now, total, f"{DAYS} days", first, min(first + step, total) - 1])
        print(f"  filled {min(first + step, total):,} rows ({time.perf_counter() - started:.0f} s)", flush=True)
    with connection.cursor() as cur:
        for name, definition in constraints:
            cur.execute(f"ALTER TABLE serving_predictionlog ADD CONSTRAINT {name} {definition}")
        for name, definition in indexes:
            if name not in {n for n, _ in constraints}:
                cur.execute(definition)
        cur.execute("VACUUM ANALYZE serving_predictionlog")  # as autovacuum leaves a steady table
    print(f"  indexed ({time.perf_counter() - started:.0f} s)", flush=True)
    return now, time.perf_counter() - started


def timed(run, repeat: int = 5) -> dict:
    first = time.perf_counter()
    run()
    cold = time.perf_counter() - first
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return {"first_s": round(cold, 4), "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}


def window_queries(now: datetime) -> dict:
    """The window reads of the monitors, rollouts and feedback matching, through the platform's own functions.
    Stand-ins carry only what those functions read of a version or a rollout (no registry rows needed)."""
    from datetime import timedelta
    from types import SimpleNamespace

    from monitoring.services.feedback import prediction_for_key
    from monitoring.traffic import _counted
    from monitoring.windows import Window, current_frame
    from rollouts.analysis import arm_figures

    signature = {"inputs": [{"name": name, "dtype": "float64"} for name in FEATURES]}
    version = SimpleNamespace(model=SimpleNamespace(name="model-3", task="classification"), version=2,
                              signature=signature)  # fmt: skip
    rollout = SimpleNamespace(arm_reason=lambda arm: f"rollout:1:{arm}")
    frame_rows = len(current_frame(version, Window(since=now - timedelta(hours=24), until=now)))
    return {
        "monitor_drift_window_24h": {**timed(lambda: current_frame(version, Window(since=now - timedelta(hours=24),
                                                                                    until=now))),
                                     "rows": frame_rows},
        "rollout_arm_window_1h": timed(lambda: arm_figures(rollout, "candidate", now - timedelta(hours=1), now)),
        "traffic_rollup_15min": timed(lambda: list(_counted(now - timedelta(minutes=15), now))),
        "feedback_match_by_key": timed(lambda: prediction_for_key(routing_key="user-42", at=now, model="model-2")),
    }  # fmt: skip


def retention_of_one_day(*, past_partial_day: bool) -> dict:
    """Remove the oldest whole day, the way serving.prune_predictions does on this table (the fill's first day is
    partial: `past_partial_day` removes it first, untimed)."""
    from datetime import timedelta

    from django.db import connection

    from serving import partitions
    from serving.services import prediction_log_prune

    def oldest_day_end():
        with connection.cursor() as cur:
            cur.execute("SELECT min(created_at) FROM serving_predictionlog")
            (oldest,) = cur.fetchone()
        return partitions.day_start(partitions.utc_day(oldest) + timedelta(days=1))

    prediction_log_prune(before=oldest_day_end() - timedelta(days=1))  # empty days' partitions, untimed
    if past_partial_day:
        prediction_log_prune(before=oldest_day_end())
    before = oldest_day_end()
    started = time.perf_counter()
    rows = prediction_log_prune(before=before)
    seconds = round(time.perf_counter() - started, 3)
    return {"rows": rows, "seconds": seconds, "partitioned": partitions.is_partitioned()}


def log_table_size() -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c"
                    " WHERE c.relname LIKE 'serving\\_predictionlog%%' AND c.relkind = 'r'")  # fmt: skip
        return cur.fetchone()[0]


def measure_log(label: str, write_rows: int, filled_at: datetime) -> dict:
    """Window queries (on the filled log alone, the same rows before and after), writes, then one day's retention."""
    from django.db import connection

    print(f"{label}: window queries", flush=True)
    queries = window_queries(filled_at)
    print(f"{label}: writes", flush=True)
    writes = {}
    for n in (1, 4, 8):
        writes[f"{n}_writers"] = round(insert_rate(write_rows, n))
        with connection.cursor() as cur:  # the written rows go again, so every run writes into the same log
            cur.execute("DELETE FROM serving_predictionlog WHERE created_at > %s", [filled_at])
    print(f"{label}: retention of one day", flush=True)
    retention = retention_of_one_day(past_partial_day=label.startswith("before"))
    return {"rows_per_s": writes, "window_queries": queries, "retention_one_day": retention,
            "size": log_table_size()}  # fmt: skip


def log_before_after(total: int, write_rows: int) -> dict:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    call_command("migrate", "serving", "0009", verbosity=0)  # today's table: one, unpartitioned
    print(f"filling {total:,} rows over {DAYS} days", flush=True)
    filled_at, seconds = fill(total)
    report = {"rows": total, "fill_seconds": round(seconds, 1)}
    report["before"] = measure_log("before (one table)", write_rows, filled_at)
    started = time.perf_counter()
    call_command("migrate", "serving", verbosity=0)
    report["migration_seconds"] = round(time.perf_counter() - started, 1)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM serving_predictionlog")
        report["rows_after_migration"] = cur.fetchone()[0]
    report["after"] = measure_log("after (day partitions)", write_rows, filled_at)
    report["explain"] = explain_windows(filled_at)
    return report


def explain_windows(now: datetime) -> dict:
    """EXPLAIN of the monitor's and a rollout arm's window on the partitioned log, for the docs."""
    from datetime import timedelta

    from django.db.models import Count

    from serving.models import PredictionLog

    monitor = PredictionLog.objects.filter(model_name="model-3", version=2, outcome__in=["ok", "fallback"],
                                           created_at__gte=now - timedelta(hours=24), created_at__lt=now)  # fmt: skip
    arm = PredictionLog.objects.filter(route_reason="rollout:1:candidate", created_at__gte=now - timedelta(hours=1),
                                       created_at__lte=now).values("outcome").annotate(n=Count("id"))  # fmt: skip
    return {"monitor_24h_count": monitor.explain(), "rollout_arm_1h": str(arm.explain())}


def print_log_report(log: dict) -> None:
    print(
        f"prediction log, {log['rows']:,} rows over {DAYS} days (filled in {log['fill_seconds']:.0f} s); "
        f"migration to day partitions {log['migration_seconds']:.0f} s, {log['rows_after_migration']:,} rows kept"
    )
    print(f"{'':34}{'one table':>14}{'day partitions':>16}{'ratio':>8}")
    for key in log["before"]["rows_per_s"]:
        b, a = log["before"]["rows_per_s"][key], log["after"]["rows_per_s"][key]
        print(f"{'writes, rows/s, ' + key.replace('_', ' '):34}{b:>14,}{a:>16,}{a / b:>8.2f}")
    for key, b in log["before"]["window_queries"].items():
        a = log["after"]["window_queries"][key]
        print(f"{key + ', median ms':34}{b['median_s'] * 1000:>14.1f}{a['median_s'] * 1000:>16.1f}"
              f"{a['median_s'] / b['median_s']:>8.2f}")  # fmt: skip
    rb, ra = log["before"]["retention_one_day"], log["after"]["retention_one_day"]
    print(f"{'retention of one day, s':34}{rb['seconds']:>14.3f}{ra['seconds']:>16.3f}"
          f"   ({rb['rows']:,} rows deleted / {ra['rows']:,} rows dropped)")  # fmt: skip
    print(f"{'size on disk':34}{log['before']['size']:>14}{log['after']['size']:>16}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="measured wrk run")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per insert measurement")
    parser.add_argument("--log-rows", type=int, default=10_000_000, help="rows in the log for part 4 (0: skip it)")
    parser.add_argument("--log-only", action="store_true", help="only part 4: the log before and after partitioning")
    opts = parser.parse_args(argv)
    pod = None
    if not opts.log_only:
        procs = bench.Processes()
        try:
            pod = one_pod(opts.seconds, procs)
        finally:
            procs.stop_all()
    env = bench.platform_env(cache=False)
    if opts.log_only:  # no pod: neither the pod's database nor its Redis
        env["DATABASE_URL"] = f"postgres://postgres@{bench.HOST}:5432/{LOG_DB}"
        env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", env["REDIS_URL"])
    if opts.log_rows:
        recreate_log_database()
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW max_connections")
        max_connections = int(cur.fetchone()[0])
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "postgres_max_connections": max_connections,
        "db_conn_max_age": os.environ.get("DB_CONN_MAX_AGE", "60 (default)"),
    }
    if pod is not None:
        rates = {threads: insert_rate(opts.rows, threads) for threads in (1, 4)}
        per_pod_connections = pod["postgres_connections_peak"]
        report.update({
            "one_pod": pod,
            "log_insert_rows_per_s": {f"{k}_threads": v for k, v in rates.items()},
            "pods_by_log_writes": max(rates.values()) / pod["rps"],
            "pods_by_connections": max_connections / per_pod_connections,
        })  # fmt: skip
        print(f"one web pod (2 gunicorn workers), logistic regression, c=64, cache off: "
              f"{pod['rps']:,.0f} req/s, p99 {pod['p99_ms']:.0f} ms, {pod['errors']} errors")  # fmt: skip
        print(f"  Postgres connections to the database: peak {per_pod_connections}, median "
              f"{pod['postgres_connections_median']:.0f}; Redis clients peak {pod['redis_clients_peak']}")  # fmt: skip
        print(f"prediction-log inserts (batches of 1,000): {rates[1]:,.0f} rows/s from 1 thread, "
              f"{rates[4]:,.0f} from 4")  # fmt: skip
        print(f"Postgres max_connections {max_connections}")
        print(f"=> one Postgres logs about {report['pods_by_log_writes']:.0f} such pods' traffic; its connection limit "
              f"allows about {report['pods_by_connections']:.0f} pods without a pooler")  # fmt: skip
    if opts.log_rows:
        if not opts.log_only:  # part 4 runs on its own database, not the pod's
            connection.close()
            connection.settings_dict["NAME"] = LOG_DB
        report["prediction_log"] = log_before_after(opts.log_rows, opts.rows)
        print_log_report(report["prediction_log"])
    report["load_average"] = os.getloadavg()
    bench.RESULTS.mkdir(exist_ok=True)
    out = bench.RESULTS / f"capacity-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
