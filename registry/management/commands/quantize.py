from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import optimisation, refs
from registry.cli import one_line

REJECTED_EXIT = 3  # as register_model: the candidate is stored, rejected by its gates


class Command(BaseCommand):
    help = (
        "Register a dynamically quantised copy (int8 weights, onnxruntime) of a version's ONNX model as a new "
        "candidate version, through the model's gates plus 'accuracy >= parent - 0.005' (r2 for regressors); "
        "prints its size and latency beside the parent's. Exits 3 when the gates reject it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="registered model name, or a models:/ reference")
        parser.add_argument("version", nargs="?", help="the parent: a number or models:/ reference")

    def handle(self, *args, **opts) -> None:
        try:
            model, ref = refs.model_named(opts["name"])
            if opts["version"] is None and ref is None:
                raise CommandError("give the version: NAME VERSION, or models:/NAME/N")
            parent = refs.resolve(model, opts["version"] if opts["version"] is not None else str(ref))
            version = optimisation.model_version_quantize(version=parent)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        report = version.gate_report
        compared = report["comparison"]
        size, latency = compared["size_bytes"], compared["latency_ms"]
        self.stdout.write(f"{version} (quantised from v{parent.version}): {report['outcome']}")
        self.stdout.write(f"  size      {size['parent']:,} -> {size['candidate']:,} bytes")
        for rows in ("1", "64"):
            self.stdout.write(
                f"  {rows:>2} rows   {latency['parent'][rows]:.3f} -> {latency['candidate'][rows]:.3f} ms"
            )
        for name, value in report["metrics"].items():
            self.stdout.write(f"  {name:9} {report['parent_metrics'].get(name, float('nan')):.4f} -> {value:.4f}")
        failed = [rule for rule in report["rules"] if not rule["passed"]]
        if failed:
            rules = "; ".join(f"{rule['rule']} ({rule['reason']})" for rule in failed)
            raise CommandError(f"{version} rejected by its quality gates: {rules}", returncode=REJECTED_EXIT)
