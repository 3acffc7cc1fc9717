"""What the prediction cache costs and saves per request, in-process: CPU time (every thread of the process: the
request processor's rounds and the cache's writer thread) per request of rounds of 1, 8 and 64 single-row requests,
cache off and on alternately, for rows that never repeat ("unique") and for 50% repeats ("half").

Why beside bench/serving.sh: on a shared 2-core machine wall-clock throughput moves by 2x between runs of the same
code, while CPU time per request is what throughput on saturated cores is made of, and moves far less.

Needs the database and artifacts a run of bench/serving.py left (modelworks_bench or BENCH_DB_NAME; bench/.work/var)
and Redis (BENCH_REDIS_DB, default 14; flushed):
    .venv/bin/python bench/prediction_cache.py [--rounds 5] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
DB_NAME = os.environ.get("BENCH_DB_NAME", "modelworks_bench")
REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('BENCH_REDIS_DB', '14'))}"
MODELS = ("breast-cancer-logreg", "breast-cancer-forest")


def setup() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48),
        ALLOWED_HOSTS="localhost", DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        REDIS_URL=REDIS_URL, MODELWORKS_PROCESS="web", MODELWORKS_VAR_DIR=str(REPO / "bench" / ".work" / "var"),
    )  # fmt: skip
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternations of off and on (medians)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    args = parser.parse_args()
    setup()
    import redis
    from django.conf import settings

    from serving import prediction_cache
    from serving.front import Pending, answer_round
    from serving.hotpath import predict_steps

    rows = [json.loads(line)["instances"][0] for line in (REPO / "bench/.work/bodies-platform.jsonl").open()]
    sent = [0]

    def body(workload: str) -> bytes:
        sent[0] += 1
        row = dict(rows[sent[0] % len(rows)])
        if workload == "unique" or sent[0] % 2:
            first = next(iter(row))
            row[first] += sent[0] * 1e-9  # never seen before
        return json.dumps({"instances": [row]}).encode()

    def cpu_per_request(model: str, workload: str, batch: int, cache: bool) -> float:
        # The switch set as a deployed process has it, fixed: override_settings would wrap every settings read of the
        # hot path in its holder (tens of us a request) and, through setting_changed, empty level 1 at each switch.
        settings.MODELWORKS_PREDICTION_CACHE = cache
        started, done = time.process_time(), 0
        while done < args.requests:
            pending = [Pending(predict_steps(model, body(workload), version=None, alias=None, request_id=None))
                       for _ in range(batch)]  # fmt: skip
            with prediction_cache.round_writes():
                answer_round(pending, 64)
            if any(item.reply.status != 200 for item in pending):
                raise SystemExit(f"{model}: {pending[0].reply.payload}")
            done += batch
        prediction_cache.drain_writes()
        return (time.process_time() - started) / done * 1e6

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).flushdb()
    print(f"{'model':<22}{'load':<8}{'batch':>6}{'off us/req':>12}{'on us/req':>11}{'off/on':>8}   (CPU, medians)")
    for model in MODELS:
        cpu_per_request(model, "half", 8, True)  # load the model, warm both levels' code paths
        for workload in ("unique", "half"):
            for batch in (1, 8, 64):
                off, on = [], []
                for _ in range(args.rounds):
                    off.append(cpu_per_request(model, workload, batch, False))
                    on.append(cpu_per_request(model, workload, batch, True))
                print(f"{model:<22}{workload:<8}{batch:>6}{median(off):>12.1f}{median(on):>11.1f}"
                      f"{median(off) / median(on):>7.2f}x", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
