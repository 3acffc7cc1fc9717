"""What a running experiment adds to the request path: routing with a split and first-exposure recording.

Usage: `.venv/bin/python bench/experiment_routing.py [--calls 20000] [--repeats 7]` (about a minute).

How it measures: a scratch embedded platform (SQLite in a temporary folder, no Redis) is migrated and seeded with
`seed_demo`, which starts the demo experiment on breast-cancer-logreg; breast-cancer-forest has none. Routes are
cached for the whole run (MODELWORKS_ROUTE_TTL_MS is raised) and the exposure buffer does not flush during timing,
so only in-process work is timed: `serving.routing.resolve`, as the prediction endpoint calls it. Each repeat times
every case once, in turn, so they share the machine's state; the figures are the medians over the repeats of the
time per call, and each case's ratio to the plain production route measured in the same repeat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    os.environ.update(MODELWORKS_VAR_DIR=tempfile.mkdtemp(prefix="bench-exp-"), DEBUG="1",
                      MODELWORKS_ROUTE_TTL_MS="3600000", MODELWORKS_EXPOSURE_FLUSH_MS="3600000")  # fmt: skip
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from experiments import exposures
    from serving import routing

    call_command("migrate", verbosity=0)
    call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115
    pool = [f"returning-{i}" for i in range(1000)]
    counter = iter(range(10**9))
    cases = {
        "production alias, no experiment": lambda: routing.resolve("breast-cancer-forest", key="k"),
        "experiment, keyless (to control)": lambda: routing.resolve("breast-cancer-logreg"),
        "experiment, returning key": lambda: routing.resolve("breast-cancer-logreg", key=pool[next(counter) % 1000]),
        "experiment, new key (exposure buffered)": lambda: routing.resolve(
            "breast-cancer-logreg", key=f"new-{next(counter)}"
        ),
    }
    for case in cases.values():  # warm the route cache
        case()
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, case in cases.items():
            started = time.perf_counter()
            for _ in range(args.calls):
                case()
            timings[name].append((time.perf_counter() - started) / args.calls * 1e6)
        exposures.exposure_buffer().flush()  # outside the timed loops, as the background thread would
    base = timings["production alias, no experiment"]
    print(f"{args.calls} calls x {args.repeats} repeats, median microseconds per resolve() and ratio to no experiment")
    for name, values in timings.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(f"  {name:<42} {statistics.median(values):7.2f} us   x{statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
