"""ONNX conversion, parity, latency and quantisation: pure functions on models and bytes (no database, no storage).

registry/optimisation.py records what these find. skl2onnx and onnxruntime are imported when first used, so a
process that never converts (the web process answering predictions) does not pay for them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from registry.models import Runtime, Task

LATENCY_ROWS = (1, 64)
QUANTISABLE_OPS = frozenset({"MatMul", "Gemm"})


class ConversionError(Exception):
    """The model cannot be converted (or quantised); the message says why in one line."""


def providers() -> list[str]:
    """The onnxruntime execution providers sessions use: CUDA when this onnxruntime has it (onnxruntime-gpu on a
    machine with a GPU), always ending with the CPU. MODELWORKS_ONNX_PROVIDERS names them explicitly instead."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = list(settings.MODELWORKS_ONNX_PROVIDERS) or ["CUDAExecutionProvider"]
    chosen = [name for name in wanted if name in available and name != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def convert(model: Any, n_features: int) -> bytes:
    """The model as ONNX (skl2onnx): one float input of n_features columns; classifiers answer a probability tensor."""
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise ConversionError("ONNX conversion needs skl2onnx: pip install 'modelworks[onnx]'") from None
    sample = np.zeros((1, n_features), dtype=np.float32)
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    try:
        return to_onnx(model, sample, options=options).SerializeToString()
    except Exception as exc:  # skl2onnx raises many kinds (MissingShapeCalculator, RuntimeError, NotImplementedError)
        raise ConversionError(f"skl2onnx cannot convert {type(model).__name__}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Parity:
    passed: bool
    report: dict[str, Any]
    reason: str


def parity(original: Any, converted: Any, X: np.ndarray, task: str) -> Parity:
    """Both models' answers on the evaluation rows: labels identical and probabilities within
    MODELWORKS_ONNX_PARITY_PROBA_ATOL (classification), values within a relative MODELWORKS_ONNX_PARITY_RTOL
    (regression)."""
    rows = len(X)
    if task == Task.REGRESSION:
        rtol = float(settings.MODELWORKS_ONNX_PARITY_RTOL)
        want = np.asarray(original.predict(X), dtype=float).ravel()
        got = np.asarray(converted.predict(X), dtype=float).ravel()
        relative = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(float).tiny)
        worst = float(relative.max()) if rows else 0.0
        report = {"rows": rows, "max_relative_diff": worst, "rtol": rtol, "rows_outside": int((relative > rtol).sum())}
        passed = worst <= rtol
        reason = "" if passed else f"values differ by up to {worst:.3g} relative on the evaluation set (rtol {rtol:g})"
        return Parity(passed, {**report, "passed": passed}, reason)
    atol = float(settings.MODELWORKS_ONNX_PARITY_PROBA_ATOL)
    labels = np.asarray(original.predict(X)).ravel()
    onnx_labels = np.asarray(converted.predict(X)).ravel().astype(labels.dtype)
    differing = int((labels != onnx_labels).sum())
    worst = float(np.abs(converted.predict_proba(X) - original.predict_proba(X)).max()) if rows else 0.0
    report = {"rows": rows, "labels_differing": differing, "max_probability_diff": worst, "atol": atol}
    problems = []
    if differing:
        problems.append(f"{differing} of {rows} labels differ")
    if worst > atol:
        problems.append(f"probabilities differ by up to {worst:.3g} (atol {atol:g})")
    passed = not problems
    return Parity(
        passed, {**report, "passed": passed}, "; ".join(problems) + (" on the evaluation set" * bool(problems))
    )


def latency_ms(model: Any, X: np.ndarray, task: str) -> dict[str, float]:
    """Median milliseconds per call at 1 and 64 rows (rows cycled from X), each measured for about
    MODELWORKS_ONNX_TIMING_MS: what serving calls (predict_proba for classifiers, predict for regressors)."""
    budget_s = settings.MODELWORKS_ONNX_TIMING_MS / 1000
    call = model.predict_proba if task == Task.CLASSIFICATION and hasattr(model, "predict_proba") else model.predict
    result = {}
    for rows in LATENCY_ROWS:
        batch = np.resize(X, (rows, X.shape[1])).astype(float)
        call(batch)  # warm-up: first calls allocate
        samples: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(samples) < 5 or (time.perf_counter() < deadline and len(samples) < 2000):
            started = time.perf_counter()
            call(batch)
            samples.append(time.perf_counter() - started)
        result[str(rows)] = round(statistics.median(samples) * 1000, 4)
    return result


def faster(latencies: dict[str, dict[str, float]]) -> tuple[str, str]:
    """The runtime with the lower geometric mean of its medians at 1 and 64 rows, and why in words."""
    ratios = [latencies[Runtime.ONNX][str(n)] / latencies[Runtime.SKLEARN][str(n)] for n in LATENCY_ROWS]
    geomean = float(np.prod(ratios)) ** (1 / len(ratios))
    chosen = Runtime.ONNX if geomean < 1 else Runtime.SKLEARN
    figures = ", ".join(
        f"{ratio:.2f}x at {n} row{'s' * (n > 1)}" for n, ratio in zip(LATENCY_ROWS, ratios, strict=True)
    )
    return str(chosen), f"onnxruntime takes {figures} of scikit-learn's time (geometric mean {geomean:.2f})"


def quantisable(onnx_bytes: bytes) -> bool:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return any(node.op_type in QUANTISABLE_OPS for node in model.graph.node)


def quantise(onnx_bytes: bytes) -> bytes:
    """onnxruntime's dynamic quantisation: MatMul/Gemm weights stored as int8, activations quantised per call."""
    if not quantisable(onnx_bytes):
        raise ConversionError(
            "nothing to quantise: the ONNX graph has no MatMul or Gemm weights (linear models and trees convert to "
            "ai.onnx.ml operators, which dynamic quantisation leaves as they are)"
        )
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mw-quantise-") as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "quantised.onnx"
        source.write_bytes(onnx_bytes)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise ConversionError(f"dynamic quantisation failed: {type(exc).__name__}: {exc}") from None
        return target.read_bytes()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("skl2onnx", "onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
