"""Distilled students beside their teacher: size, latency and accuracy in one table, per demo classifier.

How it measures: a database of its own (default modelworks_bench_distill, dropped and recreated), migrated and seeded
with `seed_demo`; then, in this process, `model_version_distill` (what `manage.py distill` runs) makes each student
of each demo classifier's production version, with --augment rows sampled within the signature's ranges. The
figures are the ones each student's gate report keeps ("comparison"): artifact size, the median of 15 model calls of
1 and of 64 rows (teacher and student measured one after the other in the same process), accuracy on the evaluation
sample (true targets) and agreement with the teacher's labels. Results on stdout and in
bench/results/distill-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
sb = importlib.util.module_from_spec(_spec)
sys.modules["bench_serving"] = sb  # its dataclasses look their module up
_spec.loader.exec_module(sb)  # bench/serving.py's helpers (its name would shadow the serving app on sys.path)

TEACHERS = ("breast-cancer-forest", "breast-cancer-logreg")
STUDENTS = ("logistic", "tree", "forest:10")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--augment", type=int, default=2000)
    parser.add_argument("--database", default=os.environ.get("BENCH_DB", "modelworks_bench_distill"))
    parser.add_argument("--redis-db", type=int, default=int(os.environ.get("BENCH_REDIS_DB", "14")))
    args = parser.parse_args()
    sb.DB_NAME, sb.REDIS_URL = args.database, f"redis://{sb.HOST}:6379/{args.redis_db}"
    sb.LOGS.mkdir(parents=True, exist_ok=True)
    import psycopg2

    conn = psycopg2.connect(**sb.DB_ADMIN, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{args.database}"')
    conn.close()
    env = {**sb.platform_env(cache=False), "MODELWORKS_VAR_DIR": str(sb.WORK / "var-distill")}
    manage = [str(sb.PROJECT_PY), "manage.py"]
    sb.run_step([*manage, "migrate", "--noinput"], env=env, log=sb.LOGS / "distill-migrate.txt", timeout=300)
    sb.run_step([*manage, "seed_demo"], env=env, log=sb.LOGS / "distill-seed.txt", timeout=300)

    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from monitoring.services.distillation import model_version_distill
    from registry.models import ModelAlias

    rows = []
    print(f"{'model':<22} {'version':<16} {'bytes':>9} {'ms, 1 row':>10} {'ms, 64 rows':>11} {'accuracy':>9} "
          f"{'agreement':>9}  gates")  # fmt: skip
    for name in TEACHERS:
        teacher = ModelAlias.objects.select_related("version__model").get(model__name=name, name="production").version
        for spec in STUDENTS:
            student = model_version_distill(teacher=teacher, student=spec, augment_rows=args.augment)
            side = student.gate_report["comparison"]
            if not rows or rows[-1]["model"] != name:
                rows.append(_row(name, f"v{teacher.version} teacher", side, "teacher", teacher.status, None))
                print(_line(rows[-1]))
            agreement = side["follows_teacher"].get("agreement")
            rows.append(_row(name, f"v{student.version} {spec}", side, "student", student.status, agreement))
            print(_line(rows[-1]))
    out = sb.RESULTS / f"distill-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    sb.RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 0


def _row(model: str, label: str, side: dict, role: str, status: str, agreement: float | None) -> dict:
    return {
        "model": model, "version": label, "bytes": side["size_bytes"][role],
        "ms_1": side["latency_ms"][role]["1"], "ms_64": side["latency_ms"][role]["64"],
        "accuracy": side["metrics"][role].get("accuracy"), "agreement": agreement, "status": status,
    }  # fmt: skip


def _line(row: dict) -> str:
    agreement = "" if row["agreement"] is None else f"{row['agreement']:.3f}"
    return (f"{row['model']:<22} {row['version']:<16} {row['bytes']:>9} {row['ms_1']:>10.3f} {row['ms_64']:>11.3f} "
            f"{row['accuracy']:>9.3f} {agreement:>9}  {row['status']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
