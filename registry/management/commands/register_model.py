from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import services
from registry.cli import json_option, one_line, read_file
from registry.models import ArtifactFormat, RegisteredModel, Task

REJECTED_EXIT = 3  # the CLI's exit code for "rejected by its quality gates" (a CI job fails on it)


class Command(BaseCommand):
    help = (
        "Register a model version from an artifact file (creating the model with --task when it is new). Exits 3 "
        "when the quality gates reject the version (it is stored, as rejected)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="registered model name (a slug)")
        parser.add_argument("artifact", help="path to a .skops / .onnx / .joblib file")
        parser.add_argument("--task", choices=Task.values, help="create the model with this task if it is new")
        parser.add_argument("--format", choices=ArtifactFormat.values, help="default: detect from the file")
        parser.add_argument("--signature", help="JSON signature, inline or @file.json (default: inferred)")
        parser.add_argument("--metrics", help='submitted metrics, JSON inline or @file, e.g. {"accuracy": 0.93}')
        parser.add_argument("--params", help="training parameters, JSON inline or @file")
        parser.add_argument("--lineage", help='lineage, JSON inline or @file, e.g. {"source": "git:abc123"}')
        parser.add_argument("--eval-data", help="evaluation dataset CSV: features plus a target column")
        parser.add_argument("--target-column", default="target")
        parser.add_argument("--gate", action="append", default=[], help="quality gate rule for a new model")
        parser.add_argument("--alias", help="point this alias at the new version if it is validated")

    def handle(self, *args, **opts) -> None:
        artifact = read_file(opts["artifact"], "artifact")
        evaluation = read_file(opts["eval_data"], "--eval-data") if opts["eval_data"] else None
        try:
            model = RegisteredModel.objects.filter(name=opts["name"]).first()
            if model is None:
                if not opts["task"]:
                    raise CommandError(f"no model named '{opts['name']}': give --task to create it")
                model = services.registered_model_create(name=opts["name"], task=opts["task"], gate_rules=opts["gate"])
            version = services.model_version_register(
                model=model,
                artifact=artifact,
                filename=Path(opts["artifact"]).name,
                fmt=opts["format"],
                signature=json_option(opts["signature"], "--signature"),
                metrics=json_option(opts["metrics"], "--metrics"),
                params=json_option(opts["params"], "--params"),
                lineage=json_option(opts["lineage"], "--lineage"),
                evaluation_data=evaluation,
                target_column=opts["target_column"],
            )
            self.stdout.write(f"{version}: {version.gate_report['outcome']} (sha256 {version.sha256[:12]})")
            if opts["alias"] and version.servable:
                services.alias_set(model=model, name=opts["alias"], version=version)
                self.stdout.write(f"{model.name}@{opts['alias']} -> v{version.version}")
            elif opts["alias"]:
                self.stdout.write(f"{model.name}@{opts['alias']} not moved: v{version.version} cannot get traffic")
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        failed = [rule for rule in version.gate_report.get("rules", []) if not rule["passed"]]
        for rule in failed:
            self.stdout.write(f"  gate failed: {rule['rule']}: {rule['reason']}")
        if version.gate_report.get("outcome") == "rejected":
            rules = "; ".join(f"{rule['rule']} ({rule['reason']})" for rule in failed) or "see its gate report"
            raise CommandError(f"{version} rejected by its quality gates: {rules}", returncode=REJECTED_EXIT)
