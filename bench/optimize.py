"""ONNX vs scikit-learn per demo model at 1 and 64 rows, with the optimised variants' size, latency and accuracy in
one table (issue 18).

How it measures
- Models: the three demo models (seed_demo's DEMO_MODELS, trained on the same splits) and a small MLP (32 hidden
  units, the kind of model with MatMul weights that dynamic quantisation shrinks).
- Variants per model, each a row: `sklearn` (the registered artifact), `onnx` (registry.onnx_tools.convert, parity
  checked with the platform's tolerances), `onnx-int8` (registry.onnx_tools.quantise; "n/a" with the reason when the
  graph has nothing to quantise), `distilled-tree` (the depth-8 tree student `manage.py distill --student tree`
  trains, on the teacher's answers). More variants plug in through VARIANTS (a name and a function of the base row).
- Latency: the call serving makes (serving.model_cache.LoadedModel.predict: scikit-learn's predict_proba through
  serving.fast_paths, or one onnxruntime run for labels and probabilities), on rows of the test split, `--repeats`
  calls per batch size after a warm-up, alternating variants round by round so a busy neighbour hits all alike.
  Medians, and each variant's ratio to sklearn.
- Accuracy (r2 for the regressor) on the test split; size is the artifact's bytes (skops or ONNX).
Results on stdout and in bench/results/optimize-<UTC time>.json.
Run: DEBUG=1 DJANGO_SETTINGS_MODULE=config.settings .venv/bin/python bench/optimize.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    model: str
    variant: str
    task: str
    estimator: Any = None  # None: the variant does not apply (`note` says why)
    size_bytes: int = 0
    note: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    quality: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _onnx(data: bytes) -> Any:
    from registry import artifacts

    return artifacts.load_model(data, "onnx")


def onnx_variant(base: Row, X: np.ndarray) -> Row:
    from registry import onnx_tools

    data = onnx_tools.convert(base.estimator, X.shape[1])
    converted = _onnx(data)
    check = onnx_tools.parity(base.estimator, converted, X, base.task)
    row = Row(base.model, "onnx", base.task, converted, len(data), extra={"onnx_bytes": data, "parity": check.report})
    row.note = "parity ok" if check.passed else f"parity failed: {check.reason}"
    return row


def quantised_variant(base: Row, X: np.ndarray, onnx_row: Row) -> Row:
    from registry import onnx_tools

    try:
        data = onnx_tools.quantise(onnx_row.extra["onnx_bytes"])
    except onnx_tools.ConversionError as exc:
        return Row(base.model, "onnx-int8", base.task, note=str(exc).split(":")[0])
    return Row(base.model, "onnx-int8", base.task, _onnx(data), len(data), note="dynamic, int8 weights")


def distilled_variant(base: Row, X: np.ndarray, y: np.ndarray) -> Row:
    """The student `manage.py distill NAME V --student tree --augment 2000` trains (monitoring/services/
    distillation.py): a depth-8 tree fitted to the teacher's answers on the test split plus 2,000 rows drawn
    uniformly within its ranges. Its accuracy is on the same split, whose labels it never saw (only the teacher's)."""
    import skops.io as sio

    from monitoring.services.distillation import StudentSpec, student_estimator

    sampled = np.random.default_rng(0).uniform(X.min(axis=0), X.max(axis=0), size=(2000, X.shape[1]))
    train = np.vstack([X, sampled])
    signature = {"inputs": [{"name": f"x{i}", "dtype": "float"} for i in range(X.shape[1])]}
    student = student_estimator(StudentSpec("tree"), base.task, signature, 0).fit(train, base.estimator.predict(train))
    return Row(base.model, "distilled-tree", base.task, student, len(sio.dumps(student)), note="student of sklearn")


# Extra variants: name -> function(base row, test X, y) -> Row.
VARIANTS: dict[str, Callable[[Row, np.ndarray, np.ndarray], Row]] = {"distilled-tree": distilled_variant}


def _caller(row: Row) -> Callable[[np.ndarray], Any]:
    from registry.artifacts import OnnxModel
    from serving import fast_paths

    estimator = row.estimator
    if row.task == "regression":
        return estimator.predict
    if isinstance(estimator, OnnxModel):
        return estimator.predict_with_proba
    return lambda X: fast_paths.predict_proba(estimator, X)


def _quality(row: Row, X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, r2_score

    predictions = np.asarray(row.estimator.predict(X)).ravel()
    return float(r2_score(y, predictions) if row.task == "regression" else accuracy_score(y, predictions))


def measure(rows: list[Row], X: np.ndarray, repeats: int) -> None:
    live = [row for row in rows if row.estimator is not None]
    for size in (1, 64):
        batch = np.resize(X, (size, X.shape[1])).astype(float)
        callers = [_caller(row) for row in live]
        for call in callers:
            for _ in range(20):
                call(batch)
        samples: list[list[float]] = [[] for _ in live]
        for _ in range(repeats):
            for index, call in enumerate(callers):
                started = time.perf_counter()
                call(batch)
                samples[index].append(time.perf_counter() - started)
        for row, taken in zip(live, samples, strict=True):
            row.latency_ms[str(size)] = statistics.median(taken) * 1000


def bench_model(name: str, task: str, estimator: Any, split: tuple, repeats: int) -> list[Row]:
    import skops.io as sio

    X_train, X_test, y_train, y_test = split
    estimator.fit(X_train, y_train)
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if hasattr(final, "_optimizer"):
        del final._optimizer  # an MLP's Adam state: only partial_fit needs it (and skops does not trust it)
    X, y = X_test.to_numpy(dtype=float), y_test.to_numpy()
    base = Row(name, "sklearn", task, estimator, len(sio.dumps(estimator)))
    converted = onnx_variant(base, X)
    rows = [base, converted, quantised_variant(base, X, converted)]
    rows += [make(base, X, y) for make in VARIANTS.values()]
    measure(rows, X, repeats)
    for row in rows:
        if row.estimator is not None:
            row.quality = _quality(row, X, y)
    return rows


def models() -> list[tuple[str, str, Any, tuple]]:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from registry.management.commands.seed_demo import DEMO_MODELS, _split

    found = [(demo.name, str(demo.task), demo.build(), _split(demo.dataset)) for demo in DEMO_MODELS]
    mlp = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=500, random_state=0))
    found.append(("breast-cancer-mlp", "classification", mlp, _split("breast_cancer")))
    return found


def table(rows: list[Row]) -> str:
    lines = [
        "| model | variant | size bytes | 1 row ms | 64 rows ms | vs sklearn (1 / 64) | accuracy (r2) | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base: dict[str, Row] = {}
    for row in rows:
        if row.variant == "sklearn":
            base[row.model] = row
        if row.estimator is None:
            lines.append(f"| {row.model} | {row.variant} | - | - | - | - | - | {row.note} |")
            continue
        ref = base[row.model].latency_ms
        ratio = " / ".join(f"{row.latency_ms[n] / ref[n]:.2f}x" for n in ("1", "64"))
        lines.append(
            f"| {row.model} | {row.variant} | {row.size_bytes:,} | {row.latency_ms['1']:.3f} | "
            f"{row.latency_ms['64']:.3f} | {ratio} | {row.quality:.4f} | {row.note} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2000, help="calls per variant and batch size")
    repeats = parser.parse_args().repeats
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantiser suggests pre-processing on every call
    started = datetime.now(UTC)
    rows: list[Row] = []
    for name, task, estimator, split in models():
        rows += bench_model(name, task, estimator, split, repeats)
    print(f"run of {started:%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f} at the start, "
          f"{repeats} calls per variant and batch size (medians)")  # fmt: skip
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"optimize-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps([{"model": r.model, "variant": r.variant, "size_bytes": r.size_bytes,
                                "latency_ms": r.latency_ms, "quality": r.quality, "note": r.note,
                                "parity": r.extra.get("parity")} for r in rows], indent=2))  # fmt: skip
    print(f"written to {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
