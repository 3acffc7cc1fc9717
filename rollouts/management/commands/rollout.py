from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import refs
from registry.cli import json_option, one_line
from registry.models import RegisteredModel
from rollouts import selectors as rollout_selectors
from rollouts import services as rollouts
from rollouts.models import ACTIVE_ROLLOUT_STATUSES, Rollout


def _model(name: str) -> tuple[RegisteredModel, refs.VersionRef | None]:
    try:
        return refs.model_named(name)
    except ValidationError as exc:
        raise CommandError(one_line(exc)) from None


def _active(model: RegisteredModel) -> Rollout:
    rollout = Rollout.objects.filter(model=model, status__in=ACTIVE_ROLLOUT_STATUSES).first()
    if rollout is None:
        raise CommandError(f"{model.name} has no active rollout")
    return rollout


def _stages(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(part) for part in raw.split(",")]
    except ValueError:
        raise CommandError(f"--stages: expected percentages like 10,25,50,100, got '{raw}'") from None


class Command(BaseCommand):
    help = (
        "Start, inspect and steer rollouts: rollout start|status|pause|resume|promote|abort MODEL [VERSION]. "
        "VERSION is a number or a reference (models:/NAME/3, models:/NAME@alias); `rollout start models:/NAME/3` "
        "names both."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["start", "status", "pause", "resume", "promote", "abort"])
        parser.add_argument("model")
        parser.add_argument("version", nargs="?", help="the candidate (start only): 3 or models:/NAME@alias")
        parser.add_argument("--stages", help="candidate percent per stage, default 10,25,50,100")
        parser.add_argument("--stage-seconds", type=int, default=300)
        parser.add_argument("--shadow", type=float, default=0, help="percent of requests mirrored to the candidate")
        parser.add_argument("--shadow-only", action="store_true", help="mirror traffic only; move none")
        parser.add_argument("--analysis", help='threshold overrides as JSON or @file, e.g. {"p99_ratio": 2}')

    def handle(self, *args, action: str, model: str, **opts) -> None:
        registered, ref = _model(model)
        if ref is not None and action != "start":
            raise CommandError(f"{action} takes the model's name ({registered.name}), not a version reference")
        try:
            if action == "start":
                rollout = self._start(registered, ref, opts)
            elif action == "status":
                rollout = Rollout.objects.filter(model=registered).first()
                if rollout is None:
                    raise CommandError(f"{registered.name} has never had a rollout")
            else:
                control = {"pause": rollouts.rollout_pause, "resume": rollouts.rollout_resume,
                           "promote": rollouts.rollout_promote, "abort": rollouts.rollout_abort}[action]  # fmt: skip
                rollout = control(rollout=_active(registered))
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self._report(Rollout.objects.select_related("candidate", "baseline").get(pk=rollout.pk))

    def _start(self, model: RegisteredModel, ref: refs.VersionRef | None, opts) -> Rollout:
        given = [value for value in (ref, opts["version"]) if value is not None]
        if not given:
            raise CommandError("start needs the candidate: rollout start MODEL VERSION (or models:/MODEL/VERSION)")
        candidate, *others = (refs.resolve(model, value) for value in given)
        if any(other.pk != candidate.pk for other in others):
            raise CommandError(f"two different candidates named: {ref} and {opts['version']}")
        return rollouts.rollout_start(
            model=model,
            candidate=candidate,
            mode=Rollout.Mode.SHADOW if opts["shadow_only"] else Rollout.Mode.CANARY,
            stages=_stages(opts["stages"]),
            stage_seconds=opts["stage_seconds"],
            shadow_percent=opts["shadow"],
            analysis=json_option(opts["analysis"], "--analysis"),
        )

    def _report(self, rollout: Rollout) -> None:
        live = rollout_selectors.live_figures(rollout)
        stage = (
            f"stage {rollout.stage_index + 1}/{len(rollout.stages)}"
            if rollout.mode == Rollout.Mode.CANARY
            else "shadow"
        )
        self.stdout.write(
            f"rollout {rollout.pk}: v{rollout.candidate.version} vs v{rollout.baseline.version}, {rollout.status}, "
            f"{stage}, {rollout.candidate_percent:g}% to the candidate"
            + (f" — {rollout.reason}" if rollout.reason else "")
        )
        for arm in ("baseline", "candidate"):
            figures = live[arm]
            rate = "-" if figures["error_rate"] is None else f"{figures['error_rate']:.2%}"
            p99 = "-" if figures["p99_ms"] is None else f"{figures['p99_ms']:.1f} ms"
            self.stdout.write(f"  {arm:9} requests {figures['requests']:>7}  errors {rate:>7}  p99 {p99}")
