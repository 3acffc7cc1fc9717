from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import optimisation, refs
from registry.cli import one_line

REFUSED_EXIT = 3  # the conversion failed or disagreed with the original: recorded, never served


class Command(BaseCommand):
    help = (
        "Convert a version to ONNX here (skl2onnx), check parity on its evaluation set, measure both runtimes at 1 "
        "and 64 rows and serve it with the faster. Exits 3 when the conversion fails or disagrees (it is recorded "
        "and never served). With --runtime, only set which runtime serves it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="registered model name, or a models:/ reference")
        parser.add_argument("version", nargs="?", help="a number or models:/ reference (default: from NAME)")
        parser.add_argument(
            "--runtime", choices=["onnx", "sklearn", "auto"], help="override the measured choice (auto: clear it)"
        )

    def handle(self, *args, **opts) -> None:
        try:
            model, ref = refs.model_named(opts["name"])
            if opts["version"] is None and ref is None:
                raise CommandError("give the version: NAME VERSION, or models:/NAME/N")
            version = refs.resolve(model, opts["version"] if opts["version"] is not None else str(ref))
            if opts["runtime"]:
                runtime = "" if opts["runtime"] == "auto" else opts["runtime"]
                version = optimisation.model_version_set_runtime(version=version, runtime=runtime)
                self.stdout.write(f"{version}: served by {version.runtime} (override: {runtime or 'none'})")
                return
            version = optimisation.model_version_convert_onnx(version=version)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        report = version.onnx_conversion
        if report["status"] != "converted":
            raise CommandError(
                f"{version}: ONNX conversion {report['status']}: {report['error']}", returncode=REFUSED_EXIT
            )
        latency = report["latency_ms"]
        digest, size = version.onnx_sha256[:12], version.onnx_size_bytes
        self.stdout.write(f"{version}: converted (sha256 {digest}, {size:,} bytes); served by {version.runtime}")
        for runtime, figures in latency.items():
            self.stdout.write(f"  {runtime:8} 1 row {figures['1']:.3f} ms, 64 rows {figures['64']:.3f} ms")
        self.stdout.write(f"  {report['reason']}")
