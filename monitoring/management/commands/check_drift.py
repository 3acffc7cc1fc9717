"""`manage.py check_drift MODEL`: run a model's drift monitor now, with a progress bar, and print the verdict."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from monitoring.models import Monitor
from monitoring.services.monitors import monitor_create, monitor_run
from registry.cli import one_line
from registry.models import RegisteredModel

DEFAULT_MONITOR = "default"


class Command(BaseCommand):
    help = "Run a model's drift monitor now (its only or named one; a default monitor is created if it has none)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("model")
        parser.add_argument("--monitor", help="the monitor's name when the model has several")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    def handle(self, *args, model: str, monitor: str | None, no_progress: bool, **opts) -> None:
        registered = RegisteredModel.objects.filter(name=model).first()
        if registered is None:
            raise CommandError(f"no model named {model!r}")
        chosen = self._monitor(registered, monitor)
        total = len(chosen.model.versions.order_by("-version").first().signature["inputs"]) + 1
        with tqdm(total=total, unit="feature", disable=no_progress, file=self.stderr) as bar:
            try:
                report = monitor_run(monitor=chosen, progress=bar.update)
            except ValidationError as exc:
                raise CommandError(one_line(exc)) from None
            bar.update(bar.total - bar.n)
        self._print(report)

    def _monitor(self, registered: RegisteredModel, name: str | None) -> Monitor:
        monitors = registered.monitors.select_related("model")
        if name:
            found = monitors.filter(name=name).first()
            if found is None:
                raise CommandError(f"{registered.name} has no monitor named {name!r}")
            return found
        if monitors.count() > 1:
            names = ", ".join(monitors.values_list("name", flat=True))
            raise CommandError(f"{registered.name} has several monitors ({names}): choose one with --monitor")
        if not registered.versions.exists():
            raise CommandError(f"{registered.name} has no versions to monitor")
        return monitors.first() or monitor_create(model=registered, name=DEFAULT_MONITOR)

    def _print(self, report) -> None:
        write = self.stdout.write
        if not report.version:
            write(report.watching)  # "<model> has no production version to watch": a result, not a failure
            return
        write(f"{report.model_name} {report.watching}")
        write(f"{report.current_rows} current rows vs {report.reference_rows} reference rows")
        for feature in report.features:
            if "skipped" in feature:
                write(f"  {feature['name']:<28} skipped: {feature['skipped']}")
                continue
            flag = "DRIFT" if feature["drifted"] else "ok"
            write(
                f"  {feature['name']:<28} {feature['test']:<5} stat={feature['statistic']:.4f}"
                f" p={feature['p_adjusted']:.3g} psi={feature['psi']:.3f} {flag}"
            )
        if report.note:
            write(f"note: {report.note}")
        verdict = "DATASET DRIFT" if report.dataset_drift else "no dataset drift"
        write(f"{verdict}: {report.drifted_features}/{report.tested_features} features ({report.drift_share:.0%})")
        quality = {k: v for k, v in report.quality.items() if k not in ("task", "requests_mismatched")}
        shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in quality.items())
        write("quality: " + ", ".join(shown))
