"""Feature store benchmark: online reads against a bare redis-py floor, and point-in-time retrieval at scale.

How it measures
- Runs in-process against real Postgres and Redis: DATABASE_URL and REDIS_URL must be set (use a database and Redis
  db of your own: the script adds a bench entity and two views there and removes them, values included, at the end
  and on Ctrl-C). Migrations are applied first.
- Online: 1,000 entities pushed to a view of 20 float features. Each round times N_CALLS calls of
  get_online_features(N random entities, all 20 features) and, interleaved call by call, the floor: a bare redis-py
  pipeline doing the same reads (one HMGET of the same view hash for the same entity keys, no decoding) on the same
  connection pool. N = 1 and N = 100. p50/p99 per round; the figures quoted are medians over ROUNDS rounds, and the
  ratio is ours/floor for the same round (the floor moves with machine load, so only same-run ratios mean anything).
- Historical: 1,000,000 stored values (10,000 entities x 100 event times, 5 features, loaded with one INSERT ..
  SELECT generate_series) and 100,000 entity rows (random entities, 2% unknown, random times across the range and
  beyond); get_historical_features is timed end to end (temp table load, SQL join, DataFrame build) REPEATS times.
- Targets (issue 5): online 100-entity p50 within 2x of the floor; historical 100k rows under 10 s.
The machine is shared: the load average is printed before and after. Results: stdout and
bench/results/features-<UTC timestamp>.json. Exit status 1 when a target fails.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> REDIS_URL=redis://127.0.0.1:6379/<n> \\
        .venv/bin/python bench/features.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from features.definitions import definitions_apply  # noqa: E402
from features.historical import get_historical_features  # noqa: E402
from features.models import Entity, FeatureValue, FeatureView, MaterializationRun  # noqa: E402
from features.online import online_store, redis_key  # noqa: E402
from features.retrieval import get_online_features  # noqa: E402
from features.services import feature_values_push  # noqa: E402

ONLINE_VIEW, HIST_VIEW, ENTITY = "bench_online", "bench_history", "bench_user"
ONLINE_ENTITIES = 1000
HIST_ENTITIES, HIST_TIMES, HIST_ROWS = 10_000, 100, 100_000
TARGET_RATIO, TARGET_HIST_S = 2.0, 10.0


def setup_views() -> tuple[FeatureView, FeatureView]:
    definitions_apply(
        entities=[{"name": ENTITY, "join_key": "user_id", "value_type": "int"}],
        views=[
            {"name": ONLINE_VIEW, "entity": ENTITY, "ttl": "1d",
             "features": [{"name": f"f{i:02d}", "dtype": "float"} for i in range(20)]},
            {"name": HIST_VIEW, "entity": ENTITY, "ttl": "6h",
             "features": [{"name": f"h{i}", "dtype": "float"} for i in range(5)]},
        ],
    )  # fmt: skip
    views = FeatureView.objects.select_related("entity")
    return views.get(name=ONLINE_VIEW), views.get(name=HIST_VIEW)


def cleanup() -> None:
    for view in FeatureView.objects.filter(name__in=[ONLINE_VIEW, HIST_VIEW]):
        online_store().drop(view)
        with transaction.atomic():
            MaterializationRun.objects.filter(view=view).delete()
            FeatureValue.objects.filter(view=view).delete()
            view.delete()
    Entity.objects.filter(name=ENTITY).delete()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_online(view: FeatureView, rounds: int, calls: int) -> dict:
    rng = random.Random(1)
    now = timezone.now()
    rows = [{"user_id": i, "event_timestamp": (now - timedelta(minutes=rng.randint(1, 600))).isoformat(),
             **{f"f{j:02d}": rng.random() for j in range(20)}} for i in range(ONLINE_ENTITIES)]  # fmt: skip
    feature_values_push(view=view, rows=rows)
    refs = [f"{ONLINE_VIEW}:f{j:02d}" for j in range(20)]
    client = online_store().client
    key = redis_key(view)
    results = {}
    for n in (1, 100):
        per_round = []
        for _ in range(rounds):
            ours, floor = [], []
            for _ in range(calls):
                ids = rng.sample(range(ONLINE_ENTITIES), n)
                entity_rows = [{"user_id": i} for i in ids]
                keys = [str(i) for i in ids]
                started = time.perf_counter()
                pipe = client.pipeline(transaction=False)
                pipe.hmget(key, keys)
                pipe.execute()
                floor.append(time.perf_counter() - started)
                started = time.perf_counter()
                answer = get_online_features(entity_rows, refs)
                ours.append(time.perf_counter() - started)
                assert answer.features[refs[0]].sources[0] == "online"
            per_round.append({
                "ours_p50_ms": percentile(ours, 50) * 1000, "ours_p99_ms": percentile(ours, 99) * 1000,
                "floor_p50_ms": percentile(floor, 50) * 1000, "floor_p99_ms": percentile(floor, 99) * 1000,
            })  # fmt: skip
            per_round[-1]["ratio_p50"] = per_round[-1]["ours_p50_ms"] / per_round[-1]["floor_p50_ms"]
        results[n] = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]} | {"rounds": per_round}
    return results


def load_history(view: FeatureView) -> datetime:
    """1M values: entity e has a value every 10 minutes from T0, in random order of ids; created = event + 1 s."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    table = FeatureValue._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (view_id, entity_key, event_ts, created_ts, data) "  # noqa: S608 (our table)
            "SELECT %s, e::text, %s + t * interval '10 minutes', %s + t * interval '10 minutes' + interval '1 second', "
            "jsonb_build_object('h0', random(), 'h1', random(), 'h2', random(), 'h3', random(), 'h4', random()) "
            "FROM generate_series(0, %s) e, generate_series(0, %s) t ORDER BY random()",
            [view.pk, t0, t0, HIST_ENTITIES - 1, HIST_TIMES - 1],
        )
        cursor.execute(f"ANALYZE {table}")
    return t0


def bench_historical(view: FeatureView, repeats: int) -> dict:
    started = time.perf_counter()
    t0 = load_history(view)
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(2)
    span = HIST_TIMES * 10 * 60
    entity_df = pd.DataFrame({
        "user_id": rng.integers(0, int(HIST_ENTITIES * 1.02), HIST_ROWS),  # ~2% unknown entities
        "event_timestamp": pd.Timestamp(t0) + pd.to_timedelta(rng.integers(-3600, span + 8 * 3600, HIST_ROWS), "s"),
    })  # fmt: skip
    refs = [f"{HIST_VIEW}:h{i}" for i in range(5)]
    timings, filled = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = get_historical_features(entity_df, refs)
        timings.append(time.perf_counter() - started)
        filled = int(result[refs[0]].notna().sum())
        assert len(result) == HIST_ROWS and result["user_id"].equals(entity_df["user_id"])
    median = statistics.median(timings)
    return {"stored_values": HIST_ENTITIES * HIST_TIMES, "entity_rows": HIST_ROWS, "rows_with_a_value": filled,
            "load_s": load_s, "seconds": timings, "median_s": median, "rows_per_s": HIST_ROWS / median}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if connection.vendor != "postgresql" or settings.MODELWORKS_FEATURES_ONLINE_STORE != "redis":
        print("set DATABASE_URL (Postgres) and REDIS_URL: the benchmark measures the real stores", file=sys.stderr)
        return 2
    call_command("migrate", verbosity=0)
    load_before = os.getloadavg()
    cleanup()
    try:
        online_view, history_view = setup_views()
        online = bench_online(online_view, args.rounds, args.calls)
        historical = bench_historical(history_view, args.repeats)
    finally:
        cleanup()
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores, shared)")
    print(f"online reads, 20 features, {args.rounds} rounds x {args.calls} calls, medians over rounds:")
    print(f"{'entities':>8} {'ours p50':>10} {'ours p99':>10} {'floor p50':>10} {'floor p99':>10} {'p50 ratio':>10}")
    for n, r in online.items():
        print(f"{n:>8} {r['ours_p50_ms']:>8.3f}ms {r['ours_p99_ms']:>8.3f}ms {r['floor_p50_ms']:>8.3f}ms "
              f"{r['floor_p99_ms']:>8.3f}ms {r['ratio_p50']:>9.2f}x")  # fmt: skip
    h = historical
    print(f"historical: {h['entity_rows']:,} entity rows over {h['stored_values']:,} values: median "
          f"{h['median_s']:.2f} s ({h['rows_per_s']:,.0f} rows/s; runs {', '.join(f'{s:.2f}' for s in h['seconds'])} s;"
          f" {h['rows_with_a_value']:,} rows got a value; data load {h['load_s']:.1f} s)")  # fmt: skip
    ok_online = online[100]["ratio_p50"] <= TARGET_RATIO
    ok_hist = h["median_s"] < TARGET_HIST_S
    print(f"target online 100 entities within {TARGET_RATIO}x of the floor: {'met' if ok_online else 'MISSED'}")
    print(f"target historical 100k rows under {TARGET_HIST_S:.0f} s: {'met' if ok_hist else 'MISSED'}")
    out = REPO / "bench" / "results" / f"features-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"load_before": load_before, "load_after": load_after, "online": online,
                               "historical": historical, "args": vars(args)}, indent=2))  # fmt: skip
    print(f"results: {out.relative_to(REPO)}")
    return 0 if ok_online and ok_hist else 1


if __name__ == "__main__":
    sys.exit(main())
