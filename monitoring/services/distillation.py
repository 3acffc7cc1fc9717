"""Distillation: a smaller student trained on a registered teacher's own predictions, registered as a new version.

The student learns what the teacher answers (not the ground truth) on the teacher's evaluation sample and its
reference sample (monitoring.ReferenceDataset), optionally with rows sampled uniformly within the signature's ranges
(or the data's, where the signature gives none). It is registered through the registry's one path, so the model's
quality gates judge it on the evaluation sample's true targets like any version; its gate report also holds size,
latency and agreement with the teacher side by side ("comparison"), and its lineage names the teacher.

Here in monitoring, not the registry: it reads the reference sample, which is monitoring's (the layer rule).
"""

from __future__ import annotations

import io
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from monitoring.models import ReferenceDataset
from registry import evaluation
from registry import services as registry
from registry.models import ModelVersion, Task
from serving.model_cache import model_cache, needs_frame

STUDENT = re.compile(r"^(?P<kind>logistic|tree|forest)(?::(?P<trees>\d{1,4}))?$")
MAX_AUGMENT_ROWS = 100_000
TREE_DEPTH = 8  # a student is meant to be small: a deeper tree memorises the teacher's noise
LATENCY_REPEATS = 15


@dataclass(frozen=True)
class StudentSpec:
    kind: str  # logistic | tree | forest
    trees: int = 0

    @property
    def text(self) -> str:
        return f"forest:{self.trees}" if self.kind == "forest" else self.kind


def parse_student(text: str) -> StudentSpec:
    """ "logistic", "tree" or "forest:N" (N trees, 1..1000); ValidationError naming `student` otherwise."""
    match = STUDENT.match(text or "")
    if match is None or (match["kind"] == "forest") != (match["trees"] is not None):
        raise ValidationError({"student": [f"'{text}' is not one of logistic, tree, forest:N"]})
    trees = int(match["trees"] or 0)
    if match["kind"] == "forest" and not 1 <= trees <= 1000:
        raise ValidationError({"student": ["forest:N takes 1 to 1000 trees"]})
    return StudentSpec(match["kind"], trees)


def model_version_distill(
    *,
    teacher: ModelVersion,
    student: str,
    augment_rows: int = 0,
    target_column: str | None = None,
    seed: int = 0,
    actor: Any = None,
) -> ModelVersion:
    """Train `student` on the teacher's predictions and register it as the next version of the teacher's model.
    `target_column`: the evaluation sample's target (None: its one column that is not a feature, else "target")."""
    spec = parse_student(student)
    if not 0 <= augment_rows <= MAX_AUGMENT_ROWS:
        raise ValidationError({"augment_rows": [f"must be between 0 and {MAX_AUGMENT_ROWS}"]})
    if not teacher.evaluation_data_path:
        raise ValidationError({"version": [f"{teacher} was registered without an evaluation sample to distil on"]})
    signature = teacher.signature
    names = [f["name"] for f in signature["inputs"]]
    eval_csv = _read_bytes(teacher.evaluation_data_path)
    target_column = target_column or _target_of(eval_csv, names)
    try:
        eval_X, eval_y = evaluation.read_evaluation_csv(eval_csv, target_column, 10**9)
        eval_X = evaluation.features_for(eval_X, signature)
    except evaluation.EvaluationDataError as exc:
        raise ValidationError({"target_column": [str(exc)]}) from None
    parts = {"evaluation": eval_X, "reference": _reference_features(teacher, names)}
    rng = np.random.default_rng(seed)
    parts["augmented"] = _sampled_within_ranges(signature, pd.concat(parts.values()), augment_rows, rng)
    X = pd.concat(parts.values(), ignore_index=True)
    X = X.astype({f["name"]: float for f in signature["inputs"] if f["dtype"] != "category"})
    loaded = model_cache().get(teacher)
    teacher_answers, _ = loaded.predict(X.astype(object).values.tolist())
    try:
        estimator = student_estimator(spec, teacher.model.task, signature, seed).fit(X, teacher_answers)
    except ValueError as exc:  # the data cannot train this student (one class only, values it cannot take)
        problem = f"{spec.text} could not be trained on the teacher's answers: {exc}"
        raise ValidationError({"student": [problem]}) from None
    artifact = sio.dumps(estimator)
    comparison = _comparison(teacher, loaded, estimator, artifact, eval_X, eval_y)
    comparison["training_rows"] = {name: len(frame) for name, frame in parts.items()}
    return registry.model_version_register(
        model=teacher.model,
        artifact=artifact,
        filename="student.skops",
        signature=signature,
        params={"student": spec.text, "augment_rows": augment_rows, "seed": seed, **_student_params(estimator)},
        tags={"distilled": "true"},
        lineage={
            "distilled_from": {"model": teacher.model.name, "version": teacher.version, "sha256": teacher.sha256},
            "student": spec.text,
            "trained_on": "the teacher's predictions over its evaluation and reference samples"
            + (f" and {augment_rows} rows sampled within the signature's ranges" if augment_rows else ""),
        },
        evaluation_data=eval_csv,
        target_column=target_column,
        derivation=registry.Derivation(parent=teacher, how=f"distilled:{spec.text}", comparison=comparison),
        actor=actor,
    )


def _read_bytes(path: str) -> bytes:
    with storages["artifacts"].open(path, "rb") as handle:
        return handle.read()


def _target_of(csv: bytes, names: list[str]) -> str:
    header = pd.read_csv(io.BytesIO(csv), nrows=0).columns
    others = [column for column in header if column not in names]
    return others[0] if len(others) == 1 else "target"


def _reference_features(teacher: ModelVersion, names: list[str]) -> pd.DataFrame:
    """The reference sample's features, when it has them in the clear (pii features are stored hashed: unusable)."""
    dataset = ReferenceDataset.objects.filter(version=teacher).first()
    if dataset is None or any(f.get("pii") for f in teacher.signature["inputs"]):
        return pd.DataFrame(columns=names)
    with storages["artifacts"].open(dataset.path, "rb") as handle:
        frame = pd.read_csv(handle)
    if any(name not in frame.columns for name in names):
        return pd.DataFrame(columns=names)
    return frame[names].dropna()


def _sampled_within_ranges(
    signature: dict[str, Any], seen: pd.DataFrame, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Rows drawn uniformly within each feature's range: the signature's min/max, else what the data holds;
    categories from the signature's allowed values, else the data's."""
    columns = {}
    for feature in signature["inputs"]:
        name, dtype = feature["name"], feature["dtype"]
        observed = seen[name].dropna()
        if dtype == "category" or dtype == "bool":
            choices = feature.get("allowed") or (
                [False, True] if dtype == "bool" else sorted(observed.unique().tolist(), key=str)
            )
            columns[name] = rng.choice(np.asarray(choices, dtype=object), size=rows) if rows else []
            continue
        low = feature.get("min", observed.min() if len(observed) else 0.0)
        high = feature.get("max", observed.max() if len(observed) else 1.0)
        values = rng.uniform(float(low), float(high), size=rows)
        columns[name] = np.round(values) if dtype == "int" else values
    return pd.DataFrame(columns, columns=[f["name"] for f in signature["inputs"]])


def student_estimator(spec: StudentSpec, task: str, signature: dict[str, Any], seed: int) -> Any:
    """The unfitted student (bench/optimize.py builds its distilled row with it too)."""
    classify = task == Task.CLASSIFICATION
    if spec.kind == "logistic":
        head = LogisticRegression(max_iter=2000) if classify else Ridge(alpha=1.0)
    elif spec.kind == "tree":
        head = (DecisionTreeClassifier if classify else DecisionTreeRegressor)(max_depth=TREE_DEPTH, random_state=seed)
    else:
        forest = RandomForestClassifier if classify else RandomForestRegressor
        head = forest(n_estimators=spec.trees, max_depth=TREE_DEPTH, random_state=seed, n_jobs=1)
    categories = [f["name"] for f in signature["inputs"] if f["dtype"] == "category"]
    if not categories:
        return make_pipeline(StandardScaler(), head) if spec.kind == "logistic" else head
    numeric = [f["name"] for f in signature["inputs"] if f["dtype"] != "category"]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore"), categories), ("numbers", StandardScaler(), numeric)]
    )
    return make_pipeline(encode, head)


def _student_params(estimator: Any) -> dict[str, Any]:
    head = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    keep = ("n_estimators", "max_depth", "C", "alpha")
    return {key: value for key, value in head.get_params().items() if key in keep and value is not None}


def _comparison(teacher: ModelVersion, loaded: Any, student: Any, artifact: bytes, X: pd.DataFrame, y: pd.Series):
    """Size, median latency at 1 and 64 rows, and the evaluation metrics of teacher and student side by side, with
    how closely the student follows the teacher on the evaluation sample."""
    rows = X.astype(object).values.tolist()
    teacher_answers, _ = loaded.predict(rows)
    frame = needs_frame(student, teacher.signature)

    def student_predict(batch: list[list[Any]]) -> Any:
        matrix = pd.DataFrame(batch, columns=list(X.columns)) if frame else np.asarray(batch, dtype=float)
        return student.predict_proba(matrix) if hasattr(student, "predict_proba") else student.predict(matrix)

    student_answers = student.predict(X if frame else X.to_numpy(dtype=float))
    if teacher.model.task == Task.CLASSIFICATION:
        follows = {"agreement": float(np.mean(np.asarray(student_answers) == np.asarray(teacher_answers)))}
    else:
        gap = np.asarray(student_answers, dtype=float) - np.asarray(teacher_answers, dtype=float)
        follows = {"rmse_vs_teacher": float(np.sqrt(np.mean(gap**2)))}
    student_metrics = evaluation.compute_metrics(student, X, y, teacher.model.task)
    teacher_metrics = teacher.gate_report.get("metrics") or teacher.metrics
    return {
        "against": {"version": teacher.version, "role": "teacher"},
        "size_bytes": {"teacher": teacher.size_bytes, "student": len(artifact)},
        "latency_ms": {
            "teacher": {str(n): _median_ms(loaded.predict, rows, n) for n in (1, 64)},
            "student": {str(n): _median_ms(student_predict, rows, n) for n in (1, 64)},
        },
        "metrics": {"teacher": teacher_metrics, "student": student_metrics},
        "follows_teacher": follows,
    }


def _median_ms(predict: Any, rows: list[list[Any]], size: int) -> float:
    batch = (rows * (size // len(rows) + 1))[:size]
    predict(batch)  # warm
    times = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        predict(batch)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 4)
