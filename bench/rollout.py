"""What a running rollout adds to a prediction: the router's split lookup, the sticky hash and the arm's bookkeeping.

How it measures
- In one process with the production settings (DEBUG off, Postgres, Redis prediction cache, prediction log on), on
  a fresh database `modelworks_bench_rollout` (dropped and recreated each run): three registered models with the
  same breast-cancer logistic-regression pipeline as v1 (production) and v2. "plain" has no rollout; "rollout-50"
  has a canary rollout of v2 at its 50% stage (both versions in use, request by request); "rollout-100" has one at a
  single 100% stage (every request takes the split path, one version in use: the router's share alone).
- Calls rotate through the models request by request (so drift in machine load hits all alike), each a single-row
  `serving.services.predict` with a distinct routing key, the same rows cycled for all. After a warm-up, every call
  is timed with perf_counter; the figures are medians of per-call latency and their ratios to "plain", and the same
  for `routing.resolve` alone.
- No HTTP: a server's parsing and auth cost the same with or without a rollout and would only dilute the ratio.

Target (issue 4): the median prediction at the 50% stage within 5% of the median without a rollout. Exit status 1
when it fails.
Run: bench/rollout.sh (or .venv/bin/python bench/rollout.py --calls 20000). Results: stdout and
bench/results/rollout-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DB_NAME = "modelworks_bench_rollout"
HOST = "127.0.0.1"
TARGET_ADDED = 0.05


def configure() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=f"postgres://postgres@{HOST}:5432/{DB_NAME}", REDIS_URL=f"redis://{HOST}:6379/10",
        MODELWORKS_VAR_DIR=str(REPO / "bench" / ".work" / "rollout-var"),
    )  # fmt: skip
    sys.path.insert(0, str(REPO))


def recreate_database() -> None:
    import psycopg2

    conn = psycopg2.connect(host=HOST, port=5432, user="postgres", dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    conn.close()


MODELS = {"plain": None, "rollout-50": [50, 100], "rollout-100": [100]}  # name -> the rollout's stages


def seed(*, with_rollout: bool = True) -> list[dict[str, float]]:
    import skops.io as sio
    from django.core.management import call_command
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from registry import services as registry
    from rollouts import services as rollouts

    call_command("migrate", verbosity=0)
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    artifact, evaluation = sio.dumps(model), X_test.assign(target=y_test).to_csv(index=False).encode()
    for name, stages in MODELS.items():
        registered = registry.registered_model_create(name=name, task="classification")
        v1 = registry.model_version_register(model=registered, artifact=artifact, evaluation_data=evaluation)
        registry.alias_create(model=registered, name="production", version=v1)
        v2 = registry.model_version_register(model=registered, artifact=artifact, evaluation_data=evaluation)
        if stages and with_rollout:
            rollout = rollouts.rollout_start(model=registered, candidate=v2, stages=stages, stage_seconds=86400)
            rollouts.tick()  # pending -> the first stage, which lasts the whole run
            rollout.refresh_from_db()
            assert rollout.candidate_percent == stages[0]
    return [{k: float(v) for k, v in row.items()} for row in X_test.to_dict(orient="records")]


def timed(calls: int, rows, fn) -> dict[str, list[float]]:
    """Rotate fn(name, row, key) through the models call by call; per-call seconds per model."""
    names = list(MODELS)
    times: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for i in range(calls):
        row, key = rows[i % len(rows)], f"user-{i}"
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            started = clock()
            fn(name, row, key)
            times[name].append(clock() - started)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    plain = statistics.median(times["plain"])
    out = {}
    for name, values in times.items():
        median = statistics.median(values)
        out[name] = {"median_us": median * 1e6, "ratio": median / plain, "added_us": (median - plain) * 1e6}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--aa", action="store_true", help="control run: start no rollout (shows the method's own bias)")
    opts = parser.parse_args(argv)
    configure()
    recreate_database()
    import django

    django.setup()
    from serving import routing, services
    from serving.prediction_log import prediction_log

    rows = seed(with_rollout=not opts.aa)

    def predict(name, row, key):
        answer = services.predict(model_name=name, payload={"instances": [row]}, routing_key=key)
        assert (answer.route == "alias:production") == (name == "plain" or opts.aa), answer.route

    def resolve(name, row, key):
        routing.resolve(name, key=key)

    timed(opts.warmup, rows, predict)
    predictions = summary(timed(opts.calls, rows, predict))
    router = summary(timed(opts.calls, rows, resolve))
    prediction_log().close()
    passed = predictions["rollout-50"]["ratio"] - 1 < TARGET_ADDED
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "calls_per_model": opts.calls,
        "predict": predictions,
        "router_only": router,
        "target": f"median predict at a 50% stage < {1 + TARGET_ADDED:.2f}x without a rollout",
        "passed": passed,
        "control_run_without_any_rollout": opts.aa,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(
        f"median per-call latency over {opts.calls} calls per model, rotating call by call"
        + (" (A/A control)" if opts.aa else "")
    )
    print(f"  {'model':<14}{'predict':>12}{'ratio':>8}{'added':>10}   {'router':>8}{'added':>10}")
    for name in MODELS:
        p, r = predictions[name], router[name]
        print(f"  {name:<14}{p['median_us']:>9.1f} us{p['ratio']:>8.3f}{p['added_us']:>7.1f} us   "
              f"{r['median_us']:>5.1f} us{r['added_us']:>7.1f} us")  # fmt: skip
    print(f"target: {report['target']}: {'PASS' if passed else 'FAIL'}   (load average {report['load_average']})")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"rollout-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out.relative_to(REPO)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
