"""Distillation: a student trained on the teacher's answers, registered through the gates with lineage to it."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from monitoring.services import references
from registry.models import ModelVersion, VersionStatus
from serving import services as serving


def test_distil_a_logistic_regression_into_a_tree(cancer_v1, logreg):
    references.reference_dataset_from_evaluation(version=cancer_v1)
    out = io.StringIO()
    call_command("distill", "cancer", "1", "--student", "tree", "--augment", "200", stdout=out)
    student = ModelVersion.objects.get(model__name="cancer", version=2)

    assert "cancer v2: validated" in out.getvalue()
    assert student.status == VersionStatus.VALIDATED
    assert student.lineage["distilled_from"] == {"model": "cancer", "version": 1, "sha256": cancer_v1.sha256}
    assert student.params["student"] == "tree" and student.tags == {"distilled": "true"}
    report = student.gate_report
    assert report["metrics_source"] == "computed" and all(rule["passed"] for rule in report["rules"])
    side = report["comparison"]
    rows = len(logreg.X_test)
    assert side["training_rows"] == {"evaluation": rows, "reference": rows, "augmented": 200}
    assert side["size_bytes"] == {"teacher": cancer_v1.size_bytes, "student": student.size_bytes}
    assert set(side["latency_ms"]["student"]) == {"1", "64"} and side["latency_ms"]["teacher"]["64"] > 0
    assert side["metrics"]["teacher"]["accuracy"] == cancer_v1.gate_report["metrics"]["accuracy"]
    assert side["metrics"]["student"]["accuracy"] == report["metrics"]["accuracy"]
    # It learnt the teacher's answers: on the evaluation rows it says what the teacher says, nearly always.
    assert side["follows_teacher"]["agreement"] >= 0.95
    answer = serving.predict(model_name="cancer", payload={"inputs": logreg.X_test.iloc[:3].values.tolist()}, version=2)
    assert answer.version == 2 and len(answer.predictions) == 3


def test_regression_student_and_refusals(diabetes_v1, ridge):
    call_command("distill", "diabetes", "1", "--student", "forest:5", stdout=io.StringIO())
    student = ModelVersion.objects.get(model__name="diabetes", version=2)
    assert student.lineage["distilled_from"]["version"] == 1 and student.params["n_estimators"] == 5
    assert student.gate_report["comparison"]["follows_teacher"]["rmse_vs_teacher"] < 30

    for bad, message in (("forest", "not one of logistic, tree, forest:N"), ("svm", "not one of"),
                         ("forest:0", "1 to 1000 trees")):  # fmt: skip
        with pytest.raises(CommandError, match=f"^student: .*{message}"):
            call_command("distill", "diabetes", "1", "--student", bad)
    with pytest.raises(CommandError, match="^no version 9 of a model named 'diabetes'$"):
        call_command("distill", "diabetes", "9", "--student", "tree")
    assert ModelVersion.objects.filter(model__name="diabetes").count() == 2
