"""Console benchmark: every console page's server time with the demo plus 1,000,000 prediction-log rows.

How it measures
- Runs in-process against the configured database (DATABASE_URL: use a Postgres database of your own; the script
  seeds the demo there if it is not, adds ROWS log rows and deletes them again at the end and on Ctrl-C).
- The extra rows are spread over the last 24 hours across the demo's models and versions (5% errors), loaded with one
  INSERT .. SELECT generate_series, then VACUUM ANALYZE (a steady table, as autovacuum keeps it), and rolled up into
  per-minute traffic as beat does every minute (the rollup's own time is printed, not part of any page).
- Each page is requested through Django's test client as a logged-in superuser (middleware, admin, templates: all
  the server does; no network, no browser): REPEATS requests after one warm-up; the median is quoted.
- Pages: the home, each model's page, every admin changelist, a change page of each kind of row that has one
  (a rollout, an experiment, a monitor's dashboard, a version, a log row). Target (issue 16): each under 300 ms.
The machine is shared: the load average is printed before and after. Results: stdout and
bench/results/console-<UTC timestamp>.json. Exit status 1 when a page misses the target.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> .venv/bin/python bench/console.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

from django.contrib import admin  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from experiments.models import Experiment  # noqa: E402
from monitoring.models import TrafficMinute  # noqa: E402
from monitoring.traffic import traffic_rollup  # noqa: E402
from registry.models import ModelVersion, RegisteredModel  # noqa: E402
from rollouts.models import Rollout  # noqa: E402
from serving.models import PredictionLog  # noqa: E402

TARGET_MS = 300.0
REPEATS = 5
BENCH_PREFIX = "bench-console-"
USER = "bench-console"


def add_log_rows(rows: int) -> None:
    pairs = list(ModelVersion.objects.values_list("model__name", "version"))
    names, versions = [m for m, _ in pairs], [v for _, v in pairs]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO serving_predictionlog (request_id, retry_key, model_name, version, routing_key, inputs, outputs,
                latency_ms, cached, route_reason, outcome, created_at)
            SELECT %(prefix)s || g, '', (%(names)s::text[])[1 + g %% %(n)s], (%(versions)s::int[])[1 + g %% %(n)s],
                'user-' || (g %% 5000), '[{"x": 1.0}]'::jsonb, '{"prediction": 0}'::jsonb,
                5 + (g %% 20), false, 'alias:production', CASE WHEN g %% 20 = 0 THEN 'error' ELSE 'ok' END,
                now() - (g %% 86400) * interval '1 second'
            FROM generate_series(1, %(rows)s) AS g
            """,
            {"prefix": BENCH_PREFIX, "names": names, "versions": versions, "n": len(pairs), "rows": rows},
        )
        cursor.execute("VACUUM ANALYZE serving_predictionlog")  # as autovacuum leaves a steady table
    print("  rolling the log up into per-minute traffic (what beat does minute by minute) ...", flush=True)
    traffic_rollup(minutes=24 * 60 + 1)


def remove_log_rows() -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM serving_predictionlog WHERE request_id LIKE %s", [BENCH_PREFIX + "%"])
    TrafficMinute.objects.all().delete()
    traffic_rollup(minutes=24 * 60 + 1)  # the demo's own traffic again


def pages() -> list[tuple[str, str]]:
    urls = [("home", reverse("admin:index"))]
    for model in RegisteredModel.objects.order_by("name"):
        urls.append((f"model page {model.name}", reverse("admin:model_page", args=[model.name])))
        urls.append((f"dashboard {model.name}", reverse("admin:monitoring_model_dashboard", args=[model.name])))
    for model_class in admin.site._registry:
        meta = model_class._meta
        urls.append(
            (
                f"list {meta.app_label}.{meta.model_name}",
                reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
            )
        )
        row = model_class.objects.order_by("-pk").first()
        if row is not None and model_class in (Rollout, Experiment, ModelVersion, PredictionLog):
            urls.append(
                (
                    f"row {meta.app_label}.{meta.model_name}",
                    reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk]),
                )
            )
    return urls


def time_page(client: Client, url: str) -> tuple[float, int]:
    client.get(url)  # warm-up: templates compiled, caches filled
    times, status = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        status = client.get(url).status_code
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="prediction-log rows to add (default 1M)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if not RegisteredModel.objects.exists():
        call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    user, _ = get_user_model().objects.get_or_create(username=USER, defaults={"is_staff": True, "is_superuser": True})
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    load_before = os.getloadavg()
    print(f"adding {args.rows:,} prediction-log rows ...", flush=True)
    started = time.perf_counter()
    add_log_rows(args.rows)
    print(f"  {time.perf_counter() - started:.1f} s; the log now holds {PredictionLog.objects.count():,} rows")
    results, failed = [], []
    try:
        for name, url in pages():
            median_ms, status = time_page(client, url)
            ok = status == 200 and median_ms < TARGET_MS
            results.append({"page": name, "url": url, "status": status, "median_ms": round(median_ms, 1), "ok": ok})
            print(f"{'ok  ' if ok else 'SLOW'} {median_ms:8.1f} ms  {status}  {name}  ({url})", flush=True)
            if not ok:
                failed.append(name)
    finally:
        remove_log_rows()
        get_user_model().objects.filter(username=USER).delete()
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared)")
    slowest = max(results, key=lambda r: r["median_ms"])
    print(f"{len(results)} pages; slowest {slowest['page']} at {slowest['median_ms']} ms; target < {TARGET_MS:.0f} ms")
    print("every page under the target" if not failed else f"over the target or failing: {', '.join(failed)}")
    out = REPO / "bench" / "results" / f"console-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "target_ms": TARGET_MS, "repeats": REPEATS, "pages": results,
                               "load": [load_before[0], load_after[0]]}, indent=2))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
