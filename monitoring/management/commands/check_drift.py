"""`manage.py check_drift MODEL`: run a model's drift monitor now, with a progress bar, and print the verdict."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from monitoring.models import Monitor
from monitoring.services.monitors import monitor_create, monitor_run, watched_version
from registry import audit, refs
from registry.cli import one_line
from registry.models import ModelVersion, RegisteredModel

DEFAULT_MONITOR = "default"


class Command(BaseCommand):
    help = (
        "Run a model's drift monitor now (its only or named one; a default monitor is created if it has none). "
        "MODEL may be a reference (models:/NAME/3, models:/NAME@production): then the monitor watching that version "
        "runs, one pinned to it (named vN) being created if none does."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("model", help="NAME, or models:/NAME/VERSION or models:/NAME@ALIAS")
        parser.add_argument("--monitor", help="the monitor's name when the model has several")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    @audit.command
    def handle(self, *args, model: str, monitor: str | None, no_progress: bool, **opts) -> None:
        try:
            registered, ref = refs.model_named(model)
            if ref is None:
                chosen = self._monitor(registered, monitor)
            else:
                chosen = self._watching(registered, refs.resolve(registered, ref), monitor)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
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

    def _watching(self, registered: RegisteredModel, version: ModelVersion, name: str | None) -> Monitor:
        """The monitor (the named one, else the only one) watching `version` now; a pinned one is created if none."""
        monitors = [m for m in registered.monitors.select_related("model").order_by("id") if not name or m.name == name]
        if name and not monitors:
            raise CommandError(f"{registered.name} has no monitor named {name!r}")
        watched = {m.pk: watched_version(m)[0] for m in monitors}
        watching = [m for m in monitors if watched[m.pk] is not None and watched[m.pk].pk == version.pk]
        if name and not watching:
            now = f"v{watched[monitors[0].pk].version}" if watched[monitors[0].pk] else "no version"
            raise CommandError(f"monitor {name!r} watches {now}, not v{version.version}")
        if len(watching) > 1:
            names = ", ".join(m.name for m in watching)
            raise CommandError(f"several monitors watch v{version.version} ({names}): choose one with --monitor")
        return watching[0] if watching else monitor_create(model=registered, name=f"v{version.version}",
                                                           version=version.version)  # fmt: skip

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
