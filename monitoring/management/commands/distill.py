from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.services.distillation import model_version_distill
from registry.cli import one_line
from registry.management.commands.register_model import REJECTED_EXIT
from registry.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Distil a registered version into a smaller student (logistic, tree or forest:N) trained on the teacher's "
        "predictions, registered as the model's next version through its quality gates. Exits 3 when they reject it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="registered model name")
        parser.add_argument("version", type=int, help="the teacher version")
        parser.add_argument("--student", required=True, help="logistic | tree | forest:N")
        parser.add_argument("--augment", type=int, default=0, help="rows sampled within the signature's ranges")
        parser.add_argument(
            "--target-column", help="the evaluation sample's target column (default: its one column not a feature)"
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts) -> None:
        teacher = ModelVersion.objects.filter(model__name=opts["name"], version=opts["version"]).first()
        if teacher is None:
            raise CommandError(f"no version {opts['version']} of a model named '{opts['name']}'")
        try:
            student = model_version_distill(
                teacher=teacher, student=opts["student"], augment_rows=opts["augment"],
                target_column=opts["target_column"], seed=opts["seed"],
            )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        report = student.gate_report
        side = report["comparison"]
        self.stdout.write(f"{student}: {report['outcome']} (student {side['size_bytes']['student']} bytes, teacher "
                          f"{side['size_bytes']['teacher']}; {_follows(side['follows_teacher'])})")  # fmt: skip
        if report["outcome"] == "rejected":
            failed = "; ".join(f"{r['rule']} ({r['reason']})" for r in report["rules"] if not r["passed"])
            raise CommandError(f"{student} rejected by its quality gates: {failed}", returncode=REJECTED_EXIT)


def _follows(figures: dict[str, float]) -> str:
    if "agreement" in figures:
        return f"agrees with the teacher on {figures['agreement']:.1%} of the evaluation rows"
    return f"RMSE vs the teacher {figures['rmse_vs_teacher']:.4g}"
