"""OOD scoring's cost: serving with out-of-distribution scoring on against off, in one run, and the scorer's own time.

How it measures
- The platform as bench/serving.py runs it (gunicorn with platform/gunicorn.conf.py, production settings, Postgres,
  Redis, the prediction log on, API keys, the prediction cache off so every request is scored and predicted), on a
  database of its own (default modelworks_bench_ood, dropped and recreated) seeded with `seed_demo`; then
  `manage.py ood_profile` gives each demo model's production version its profile (flag only, never refusing).
- Load: wrk, one row of the breast-cancer test split per request (the demo's diabetes model gets the diabetes
  test split), a warm-up and a measured run per model and concurrency. The server is restarted with
  MODELWORKS_OOD_SCORING=0 and =1 alternately for --rounds rounds (off-on, then on-off, ...), so both arms see the
  same machine; the figures compared are each arm's medians over the rounds.
- In this process (then, on the same database): the median time of serving.ood.verdict_for (the scorer and its
  counters, as the prediction path calls it) for one row over 2,000 calls, and the median single-row
  services.predict with scoring on and off, alternating call by call (--calls, as bench/rollout.py measures).
Targets (issue 18): requests/s with scoring on within 5% of off (median, same run); the scorer under 5% of the
median request time (the in-process services.predict's, stricter than wrk's p50, which is also shown).
Results on stdout and in bench/results/ood-<UTC timestamp>.json; exit 1 when a target fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
sb = importlib.util.module_from_spec(_spec)
sys.modules["bench_serving"] = sb  # its dataclasses look their module up
_spec.loader.exec_module(sb)  # bench/serving.py's helpers (its name would shadow the serving app on sys.path)

MODELS = ("breast-cancer-logreg", "breast-cancer-forest", "diabetes-ridge")
PRODUCTION_VERSION = (  # the demo's own model names go in, never input
    "SELECT v.version FROM registry_modelalias a JOIN registry_modelversion v ON v.id = a.version_id "
    "JOIN registry_registeredmodel m ON m.id = a.model_id WHERE a.name = 'production' AND m.name = '{model}'"
)
TARGET_RATIO = 0.95
SCORER_SHARE = 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of each measured run (default 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs (default 3)")
    parser.add_argument("--connections", default="8,64")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--calls", type=int, default=10_000, help="in-process predictions per model (default 10,000)")
    parser.add_argument("--database", default=os.environ.get("BENCH_DB", "modelworks_bench_ood"))
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("BENCH_REDIS_DB", "14")))
    return parser.parse_args()


def prepare(args: argparse.Namespace) -> str:
    import psycopg2

    conn = psycopg2.connect(**sb.DB_ADMIN, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{args.database}"')
    conn.close()
    shutil.rmtree(sb.WORK / "var", ignore_errors=True)
    env = sb.platform_env(cache=False)
    manage = [str(sb.PROJECT_PY), "manage.py"]
    sb.run_step([*manage, "migrate", "--noinput"], env=env, log=sb.LOGS / "ood-migrate.txt", timeout=300)
    sb.run_step([*manage, "seed_demo"], env=env, log=sb.LOGS / "ood-seed.txt", timeout=300)
    for model in MODELS:
        version = sb.query_one(PRODUCTION_VERSION.format(model=model))
        out = sb.run_step([*manage, "ood_profile", model, str(version), "--flag-only"], env=env,
                          log=sb.LOGS / f"ood-profile-{model}.txt", timeout=300)  # fmt: skip
        print("  " + out.strip())
    cmd = [*manage, "create_api_key", f"bench-ood-{int(time.time())}", "--scope", "predict:*"]
    return sb.run_step(cmd, env=env, log=sb.LOGS / "ood-api-key.txt", timeout=120).strip().splitlines()[-1].strip()


def bodies() -> dict[str, Path]:
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    cancer = sb.write_bodies(sb.test_rows())["platform"]
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    _, X_test, _, _ = train_test_split(X, y, test_size=0.25, random_state=42)
    diabetes = sb.WORK / "bodies-diabetes.jsonl"
    diabetes.write_text("".join(json.dumps({"instances": [r]}) + "\n" for r in X_test.to_dict(orient="records")))
    return {"breast-cancer-logreg": cancer, "breast-cancer-forest": cancer, "diabetes-ridge": diabetes}


def serve_round(scoring: bool, key: str, files: dict[str, Path], args, opts, procs) -> list[dict]:
    sb.query_one("TRUNCATE serving_predictionlog")
    port = sb.free_port()
    cmd, _ = sb.gunicorn_cmd(port)
    env = {**sb.platform_env(cache=False), "MODELWORKS_OOD_SCORING": "1" if scoring else "0"}
    arm = "on" if scoring else "off"
    log = sb.LOGS / f"ood-{arm}-gunicorn.txt"
    proc = procs.start(cmd, env=env, log=log)
    runs = []
    try:
        sb.wait_ready(proc, port, "/healthz", log)
        for model in args.models:
            target = sb.Target(f"ood {arm}", model, port, f"/api/v1/models/{model}/predict", files[model],
                               f"Api-Key {key}")  # fmt: skip
            measured, _ = sb.measure(target, opts)
            runs += [{"arm": arm, **sb.asdict(run)} for run in measured]
    finally:
        procs.stop(proc, group=False, grace=60)
    scored = sb.query_one("SELECT count(*) FROM serving_predictionlog WHERE ood_scores IS NOT NULL")
    if scoring != bool(scored):
        raise sb.BenchError(f"OOD scoring {arm}, yet {scored} logged predictions carry OOD scores")
    return runs


def in_process(args: argparse.Namespace, files: dict[str, Path], calls: int) -> dict[str, dict[str, float]]:
    """In this process, per model: the median of serving.ood.verdict_for for one row (the scorer and its counters,
    as the prediction path calls it), and the median single-row services.predict with scoring on and off,
    alternating call by call (as bench/rollout.py measures a rollout), in microseconds."""
    os.environ.update(sb.platform_env(cache=False))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings

    from registry.models import ModelAlias
    from serving import ood
    from serving import services as serving
    from serving.model_cache import model_cache
    from serving.validation import rows_from_payload

    figures = {}
    for model in args.models:
        version = ModelAlias.objects.select_related("version").get(model__name=model, name="production").version
        loaded = model_cache().get(version)
        payloads = [json.loads(line) for line in files[model].read_text().splitlines()]
        rows = [rows_from_payload(p, loaded.signature, 1) for p in payloads]
        assert ood.scorer_for(version.pk) is not None, f"{model} has no OOD profile"
        scorer = []
        for i in range(2000):
            started = time.perf_counter()
            ood.verdict_for(version.pk, model, version.version, rows[i % len(rows)])
            scorer.append(time.perf_counter() - started)
        predict = {True: [], False: []}
        for i in range(calls):
            scoring = settings.MODELWORKS_OOD_SCORING = bool(i % 2)
            started = time.perf_counter()
            serving.predict(model_name=model, payload=payloads[(i // 2) % len(payloads)], alias="production")
            predict[scoring].append(time.perf_counter() - started)
        figures[model] = {
            "scorer_us": statistics.median(scorer) * 1e6,
            "predict_off_us": statistics.median(predict[False]) * 1e6,
            "predict_on_us": statistics.median(predict[True]) * 1e6,
        }
    settings.MODELWORKS_OOD_SCORING = True
    return figures


def main() -> int:
    args = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, sb._interrupt)  # unwind like Ctrl-C: every started process is stopped
    args.models = tuple(m for m in args.models.split(",") if m)
    conns = tuple(int(c) for c in args.connections.split(","))
    sb.DB_NAME = args.database
    sb.REDIS_URL = f"redis://{sb.HOST}:6379/{args.redis_db}"
    sb.LOGS.mkdir(parents=True, exist_ok=True)
    opts = sb.Options(duration=args.duration, warmup=args.warmup, connections=conns, threads=2, models=args.models,
                      platform=True, mlflow=False, cache_run=False, timeout=10)  # fmt: skip
    procs = sb.Processes()
    started = datetime.now(UTC)
    try:
        key = prepare(args)
        files = bodies()
        runs = []
        for round_ in range(args.rounds):
            for scoring in (False, True) if round_ % 2 == 0 else (True, False):
                print(f"\nround {round_ + 1}: OOD scoring {'on' if scoring else 'off'}", flush=True)
                runs += serve_round(scoring, key, files, args, opts, procs)
        local = in_process(args, files, args.calls)
    finally:
        procs.stop_all()
    table, passed = [], True
    print(f"\n{'model':<22} {'c':>3} {'req/s off':>10} {'req/s on':>10} {'on/off':>7} {'p50 off':>8} {'p50 on':>8} "
          f"{'p99 off':>8} {'p99 on':>8}")  # fmt: skip
    for model in args.models:
        for c in conns:
            arm = {a: [r for r in runs if r["model"] == model and r["connections"] == c and r["arm"] == a]
                   for a in ("off", "on")}  # fmt: skip
            med = {a: {k: statistics.median(r[k] for r in arm[a]) for k in ("rps", "p50_ms", "p99_ms")} for a in arm}
            ratio = med["on"]["rps"] / med["off"]["rps"]
            passed &= ratio >= TARGET_RATIO
            table.append({"model": model, "connections": c, "off": med["off"], "on": med["on"], "ratio": ratio})
            print(f"{model:<22} {c:>3} {med['off']['rps']:>10.1f} {med['on']['rps']:>10.1f} {ratio:>7.3f} "
                  f"{med['off']['p50_ms']:>8.2f} {med['on']['p50_ms']:>8.2f} {med['off']['p99_ms']:>8.2f} "
                  f"{med['on']['p99_ms']:>8.2f}")  # fmt: skip
    print("\nin this process, one row (medians, us): the scorer alone (serving.ood.verdict_for, 2,000 calls), and "
          f"services.predict with scoring off and on ({args.calls} calls, alternating)")  # fmt: skip
    shares = {}
    for model in args.models:
        f = local[model]
        shares[model] = f["scorer_us"] / f["predict_off_us"]
        passed &= shares[model] < SCORER_SHARE
        p50 = next(t["off"]["p50_ms"] for t in table if t["model"] == model and t["connections"] == conns[0])
        print(f"  {model:<22} scorer {f['scorer_us']:6.1f}  predict off {f['predict_off_us']:7.1f}  on "
              f"{f['predict_on_us']:7.1f} ({f['predict_on_us'] / f['predict_off_us'] - 1:+.1%})  scorer = "
              f"{shares[model]:.1%} of the in-process request, {f['scorer_us'] / (p50 * 1000):.1%} of wrk's p50 "
              f"at c={conns[0]}")  # fmt: skip
    print(f"\ntargets: req/s on >= {TARGET_RATIO:.0%} of off; scorer < {SCORER_SHARE:.0%} of the median request: "
          f"{'PASS' if passed else 'FAIL'}")  # fmt: skip
    sb.RESULTS.mkdir(exist_ok=True)
    out = sb.RESULTS / f"ood-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"started_at": started.isoformat(), "args": vars(args), "table": table,
                               "in_process": local, "scorer_share": shares, "runs": runs, "passed": passed},
                              indent=2, default=str))  # fmt: skip
    print(f"results: {out.relative_to(REPO)}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
