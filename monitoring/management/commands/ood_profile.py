from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.services.ood import KEEP, ood_profile_build
from monitoring.services.references import reference_dataset_for
from registry.cli import one_line
from registry.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Compute a version's out-of-distribution profile from its reference sample (made from its evaluation sample "
        "when it has none yet), and choose whether rows scoring above a threshold are refused (422) or only flagged."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="registered model name")
        parser.add_argument("version", type=int)
        refusal = parser.add_mutually_exclusive_group()
        refusal.add_argument("--refuse-above", type=float, help="refuse requests with a row scoring above this (>= 1)")
        refusal.add_argument("--flag-only", action="store_true", help="never refuse: flag and log only")

    def handle(self, *args, **opts) -> None:
        version = ModelVersion.objects.filter(model__name=opts["name"], version=opts["version"]).first()
        if version is None:
            raise CommandError(f"no version {opts['version']} of a model named '{opts['name']}'")
        refuse_above = None if opts["flag_only"] else KEEP if opts["refuse_above"] is None else opts["refuse_above"]
        try:
            if reference_dataset_for(version) is None:
                raise CommandError(f"{version} has no reference sample and no evaluation sample to make one from")
            profile = ood_profile_build(version=version, refuse_above=refuse_above)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        data = profile.profile
        refusing = "flag only" if profile.refuse_above is None else f"refusing rows above {profile.refuse_above:g}"
        features = f"{len(data['numeric'])} numeric and {len(data['categories'])} categorical features"
        self.stdout.write(f"{version}: OOD profile of {profile.rows} reference rows, {features}; {refusing}")
