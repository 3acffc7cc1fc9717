"""`manage.py experiment create|start|weights|stop|conclude|results|list`: the experiments from a terminal."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from experiments import parsing, selectors, services
from experiments.models import Experiment
from registry.cli import one_line
from registry.models import RegisteredModel


def _parsed(parse):
    """argparse type: the parser's ValueError as a one-line CommandError."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    return convert


arm, metric, weight = _parsed(parsing.arm), _parsed(parsing.metric), _parsed(parsing.weight)


class Command(BaseCommand):
    help = "Create, start, re-weight, stop, conclude and read A/B experiments between model versions."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="a draft experiment (--start to start it too)")
        create.add_argument("name")
        create.add_argument("--model", required=True)
        create.add_argument(
            "--arm",
            action="append",
            required=True,
            type=arm,
            help="NAME=VERSION:WEIGHT (VERSION: 2 or models:/NAME@alias); first=control",
        )
        create.add_argument(
            "--metric", required=True, type=metric, help="conversion:EVENT, mean_value:EVENT or quality"
        )
        create.add_argument("--guardrail", action="append", default=[], type=metric)
        create.add_argument("--min-sample", type=int, default=100, help="exposed keys per arm, at least")
        create.add_argument("--mde", type=float, default=0.05, help="relative minimum detectable effect")
        create.add_argument("--power", type=float, default=0.8)
        create.add_argument("--alpha", type=float, default=0.05)
        create.add_argument("--salt")
        create.add_argument("--description", default="")
        create.add_argument("--keyless-random", action="store_true", help="split keyless requests at random")
        create.add_argument("--start", action="store_true")
        for action in ("start", "stop"):
            sub.add_parser(action).add_argument("name")
        weights = sub.add_parser("weights", help="new weights for a draft or running experiment")
        weights.add_argument("name")
        weights.add_argument("weights", nargs="+", type=weight, help="ARM=WEIGHT ...")
        conclude = sub.add_parser("conclude", help="end it and promote the winner to production")
        conclude.add_argument("name")
        conclude.add_argument("--winner", required=True)
        conclude.add_argument("--message", default="")
        conclude.add_argument(
            "--via", choices=services.Promotion.values, default="direct",
            help="direct: move the production alias now; rollout: start a staged rollout of the winner",
        )  # fmt: skip
        results = sub.add_parser("results")
        results.add_argument("name")
        results.add_argument("--json", action="store_true")
        results.add_argument(
            "--period", choices=selectors.PERIODS, default=selectors.SINCE_WEIGHT_CHANGE,
            help="keys first exposed since the last weight change (default), or all of them, mixing allocations",
        )  # fmt: skip
        sub.add_parser("list")

    def handle(self, *args, action: str, **opts) -> None:
        try:
            getattr(self, f"do_{action}")(opts)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None

    def _experiment(self, name: str) -> Experiment:
        found = Experiment.objects.select_related("model").filter(name=name).first()
        if found is None:
            raise CommandError(f"no experiment named '{name}'")
        return found

    def do_create(self, opts: dict[str, Any]) -> None:
        model = RegisteredModel.objects.filter(name=opts["model"]).first()
        if model is None:
            raise CommandError(f"no model named '{opts['model']}'")
        experiment = services.experiment_create(
            model=model, name=opts["name"], arms=opts["arm"], primary_metric=opts["metric"],
            guardrail_metrics=opts["guardrail"], description=opts["description"], salt=opts["salt"],
            minimum_sample_size=opts["min_sample"], minimum_detectable_effect=opts["mde"], power=opts["power"],
            alpha=opts["alpha"], keyless_to_control=not opts["keyless_random"],
        )  # fmt: skip
        self.stdout.write(f"{experiment}: created ({experiment.status})")
        if opts["start"]:
            self.do_start(opts)

    def do_start(self, opts: dict[str, Any]) -> None:
        experiment = services.experiment_start(experiment=self._experiment(opts["name"]))
        self.stdout.write(f"{experiment}: running on {experiment.model.name}'s production traffic")

    def do_stop(self, opts: dict[str, Any]) -> None:
        experiment = services.experiment_stop(experiment=self._experiment(opts["name"]))
        self.stdout.write(f"{experiment}: stopped; production traffic is back on the production alias")

    def do_weights(self, opts: dict[str, Any]) -> None:
        experiment = services.experiment_set_weights(
            experiment=self._experiment(opts["name"]), weights=dict(opts["weights"])
        )
        for row in experiment.arms.order_by("position"):
            self.stdout.write(f"{row.name}: weight {row.weight}, buckets {row.ranges}")

    def do_conclude(self, opts: dict[str, Any]) -> None:
        experiment = services.experiment_conclude(
            experiment=self._experiment(opts["name"]), winner=opts["winner"], message=opts["message"],
            promote=opts["via"],
        )  # fmt: skip
        after = experiment.events.get(action="experiment.concluded").after
        version = f"v{experiment.winner.version.version}"
        if after["promote"] == "direct":
            outcome = f"{experiment.model.name}@production -> {version}"
        elif after["promote"] == "rollout":
            outcome = f"rollout {after['rollout']} of {version} started"
        else:
            outcome = after["promote"]
        self.stdout.write(f"{experiment}: concluded, winner {experiment.winner.name}; {outcome}")

    def do_list(self, opts: dict[str, Any]) -> None:
        for experiment in selectors.experiment_list():
            arms = ", ".join(f"{a.name}=v{a.version.version}:{a.weight}" for a in experiment.arms.all())
            self.stdout.write(f"{experiment.name}\t{experiment.model.name}\t{experiment.status}\t{arms}")

    def do_results(self, opts: dict[str, Any]) -> None:
        results = selectors.experiment_results(self._experiment(opts["name"]), opts["period"])
        if opts["json"]:
            self.stdout.write(json.dumps(results, cls=DjangoJSONEncoder, indent=2))
            return
        srm = results["allocation"]["srm"]
        verdict = "MISMATCH: do not trust these results" if srm["mismatch"] else "ok"
        self.stdout.write(
            f"{results['experiment']} ({results['status']}): sample ratio {verdict} (p={srm['p_value']:.3g})"
        )
        self.stdout.write(("MIXED ALLOCATIONS: " if srm["mixed_allocations"] else "") + results["period"]["note"])
        for block in [results["primary"], *results["guardrails"]]:
            self.stdout.write(f"\n{block['label']}{' (lower is better)' if block['lower_is_better'] else ''}")
            for row in block["arms"]:
                self.stdout.write("  " + _row(row))
        sample = results["sample_size"]
        self.stdout.write(f"\nprogress {sample['progress']:.0%} of {sample['planned']} per arm. {results['peeking']}")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _row(row: dict[str, Any]) -> str:
    text = f"{row['arm']:<12} n={row['n']:<7} mean={_fmt(row['mean'])} [{_fmt(row['ci'][0])}, {_fmt(row['ci'][1])}]"
    versus = row.get("vs_control")
    if versus:
        low, high = versus["relative_ci"]
        text += (
            f"  lift {_fmt(versus['relative_lift'], 3)} [{_fmt(low, 3)}, {_fmt(high, 3)}]"
            f" p={_fmt(versus['p_value'], 3)}"
        )
    return text
