"""What registry.sandbox's worker-process check adds to one registration: the check against the in-process load.

How it measures
- Models: the breast-cancer logistic regression, a 10-tree and a 300-tree random forest, saved with skops.
- Per model, --repeats times alternating: artifacts.vet_untrusted (a fork from the warm forkserver, the bytes over a
  pipe, the load under the memory limit, the answer back) and artifacts.load_model in this process. Medians.
- The forkserver's start (Django set-up and the model libraries' imports, paid once per process) on its own line.
Results on stdout. Run: DJANGO_SETTINGS_MODULE=config.settings python bench/artifact_check.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    django.setup()
    import skops.io as sio
    from sklearn import datasets
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from registry import artifacts, sandbox

    started = time.perf_counter()
    sandbox.warm()
    artifacts.vet_untrusted(sio.dumps(LogisticRegression().fit([[0], [1]], [0, 1])), "skops")
    print(f"forkserver start and first check: {time.perf_counter() - started:.2f} s")
    X, y = datasets.load_breast_cancer(return_X_y=True)
    for name, estimator in [
        ("logreg", LogisticRegression(max_iter=5000)),
        ("forest-10", RandomForestClassifier(10, random_state=0)),
        ("forest-300", RandomForestClassifier(300, random_state=0)),
    ]:
        data = sio.dumps(estimator.fit(X, y))
        checked, loaded = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            artifacts.vet_untrusted(data, "skops")
            checked.append(time.perf_counter() - started)
            started = time.perf_counter()
            artifacts.load_model(data, "skops")
            loaded.append(time.perf_counter() - started)
        print(
            f"{name:>10}: {len(data) / 1e6:6.2f} MB  in-process load {statistics.median(loaded) * 1000:6.0f} ms  "
            f"worker check {statistics.median(checked) * 1000:6.0f} ms  (medians of {repeats})"
        )


if __name__ == "__main__":
    main()
