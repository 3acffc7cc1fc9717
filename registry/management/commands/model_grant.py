from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import audit, services
from registry.cli import one_line
from registry.models import GrantPermission, ModelGrant, RegisteredModel


class Command(BaseCommand):
    help = (
        "Give, revoke or list per-model permissions (registry/permissions.py): write, deploy or own on one model, to "
        "a user or a group. Run by the operator (the platform itself), so it needs no role."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["give", "revoke", "list"])
        parser.add_argument("model", help="registered model name")
        parser.add_argument("permission", nargs="?", choices=GrantPermission.values)
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--user", help="username")
        who.add_argument("--group", help="group name (a role or any other group)")

    @audit.command
    def handle(self, *args, **opts) -> None:
        model = RegisteredModel.objects.filter(name=opts["model"]).first()
        if model is None:
            raise CommandError(f"no registered model named '{opts['model']}'")
        if opts["action"] == "list":
            for grant in ModelGrant.objects.filter(model=model).select_related("user", "group"):
                to = f"user {grant.user.username}" if grant.user else f"group {grant.group.name}"
                self.stdout.write(f"{grant.permission}\t{to}")
            return
        if not opts["permission"] or not (opts["user"] or opts["group"]):
            raise CommandError(f"{opts['action']} needs a permission and --user or --group")
        user = group = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user named '{opts['user']}'")
        else:
            group = Group.objects.filter(name=opts["group"]).first()
            if group is None:
                raise CommandError(f"no group named '{opts['group']}'")
        to = f"user {user.username}" if user else f"group {group.name}"
        try:
            if opts["action"] == "give":
                services.model_grant_give(model=model, permission=opts["permission"], user=user, group=group)
                self.stdout.write(f"{opts['permission']} on {model.name} given to {to}")
                return
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        grant = ModelGrant.objects.filter(model=model, permission=opts["permission"], user=user, group=group).first()
        if grant is None:
            raise CommandError(f"{to} has no {opts['permission']} grant on {model.name}")
        services.model_grant_revoke(grant=grant)
        self.stdout.write(f"{opts['permission']} on {model.name} revoked from {to}")
