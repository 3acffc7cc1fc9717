"""Who may do what: the one place that decides (roles, per-model grants, API key scopes).

The vocabulary, shared by users and API keys:

- `read`: read the registry, rollouts, experiments, monitors and features (everything but raw logged inputs);
- `read_inputs`: the raw inputs in the prediction log;
- `write` (per model): register models and versions, archive them, move unprotected aliases, run experiments and
  monitors, send feedback, push features;
- `deploy` (per model): move a protected alias (RegisteredModel.protected_aliases, default ["production"]),
  start/pause/resume/promote/abort rollouts, roll back, conclude experiments into production;
- `admin`: API keys, users, serving policies;
- `predict` (per model): the prediction endpoints (checked on the hot path by serving/hotpath.py).

A user holds a permission through a role (a Django group named in ROLES), or, for `write` and `deploy`, through a
ModelGrant on that model (to the user or to one of their groups; `own` includes both). Superusers hold everything.
An API key holds what its scopes say: registry:read -> read, registry:write -> write (every model),
deploy:<model> / deploy:* -> deploy, predict:<model> / predict:* -> predict; never admin or read_inputs.
No actor (None) is the platform itself (the rollout ticker, a management command): it is never refused.

`check` is called by the API's permission class (config/access.py), by the services that move traffic when they
are given an actor (so the admin console and anything else calling them is covered too) and by admin actions.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q

from registry.models import GrantPermission, ModelGrant, RegisteredModel

READ = "read"
READ_INPUTS = "read_inputs"
WRITE = "write"
DEPLOY = "deploy"
ADMIN = "admin"
PREDICT = "predict"

PERMISSIONS = (READ, READ_INPUTS, WRITE, DEPLOY, ADMIN, PREDICT)
PER_MODEL = (WRITE, DEPLOY, PREDICT)  # named with the model when refused: "deploy:churn"

VIEWER, DATA_SCIENTIST, DEPLOYER, ADMIN_ROLE = "viewer", "data scientist", "deployer", "admin"
ROLES: dict[str, frozenset[str]] = {
    VIEWER: frozenset({READ}),
    DATA_SCIENTIST: frozenset({READ, READ_INPUTS, WRITE}),
    DEPLOYER: frozenset({READ, DEPLOY}),
    ADMIN_ROLE: frozenset({READ, ADMIN}),
}

# API key scopes -> the permission they give (model-scoped families are "<family>:<model>" or "<family>:*").
_KEY_GLOBAL = {READ: ("registry:read", "registry:*"), WRITE: ("registry:write", "registry:*")}
_KEY_PER_MODEL = {DEPLOY: "deploy", PREDICT: "predict"}


class PermissionRefused(PermissionDenied):
    """The actor lacks `permission` (on `model`, when it is per model): a 403 naming it."""

    def __init__(self, permission: str, model: RegisteredModel | None = None, actor: Any = None) -> None:
        self.permission = permission
        self.model = model
        per_model = model is not None and permission in PER_MODEL
        self.missing = f"{permission}:{model.name}" if per_model else permission
        if key_scopes(actor) is not None:
            # a key is told the scope that would give it: registry:read, registry:write, deploy:<model>, ...
            if permission in _KEY_GLOBAL:
                self.missing = _KEY_GLOBAL[permission][0]
            elif permission in _KEY_PER_MODEL:
                self.missing = f"{_KEY_PER_MODEL[permission]}:{model.name if model is not None else '*'}"
            self.message = f"this API key lacks the scope {self.missing}"
            if permission not in _KEY_GLOBAL and permission not in _KEY_PER_MODEL:
                self.message = f"this API key cannot hold {permission}: only a user can"
        else:
            who = getattr(actor, "username", None) or "an anonymous caller"
            self.message = f"{who} lacks the permission {self.missing}"
        super().__init__(self.message)

    def as_response_body(self) -> dict[str, str]:
        return {"detail": self.message, "missing_permission": self.missing}


def is_system(actor: Any) -> bool:
    return actor is None


def key_scopes(actor: Any) -> list[str] | None:
    """The scopes of the API key an actor stands for (serving.auth.ApiKeyUser), None for anyone else."""
    scopes = getattr(actor, "api_key_scopes", None)
    return list(scopes) if scopes is not None else None


def _key_holds(scopes: list[str], permission: str, model: RegisteredModel | None) -> bool:
    if permission in _KEY_GLOBAL:
        return any(scope in scopes for scope in _KEY_GLOBAL[permission])
    family = _KEY_PER_MODEL.get(permission)
    if family is None:
        return False  # admin, read_inputs: never an API key's
    if f"{family}:*" in scopes:
        return True
    return model is not None and f"{family}:{model.name}" in scopes


def roles_of(user: Any) -> set[str]:
    return set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))


def holds(actor: Any, permission: str, model: RegisteredModel | None = None) -> bool:
    """Whether `actor` holds `permission` (on `model`) now; read from the database on every call."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    if is_system(actor):
        return True
    scopes = key_scopes(actor)
    if scopes is not None:
        return _key_holds(scopes, permission, model)
    if not getattr(actor, "is_authenticated", False) or not getattr(actor, "is_active", False):
        return False
    if actor.is_superuser:
        return True
    if permission == PREDICT:
        return True  # any active user's token may predict (serving/hotpath.py checks tokens, not roles)
    if any(permission in ROLES[role] for role in roles_of(actor)):
        return True
    if model is None or permission not in (WRITE, DEPLOY):
        return False
    return (
        ModelGrant.objects.filter(model_id=model.pk, permission__in=[permission, GrantPermission.OWN])
        .filter(Q(user_id=actor.pk) | Q(group__in=actor.groups.all()))
        .exists()
    )


def check(actor: Any, permission: str, model: RegisteredModel | None = None) -> None:
    """Nothing when `actor` holds `permission` (on `model`); PermissionRefused naming it otherwise."""
    if not holds(actor, permission, model):
        raise PermissionRefused(permission, model, actor)


def protected_aliases(model: RegisteredModel) -> list[str]:
    """The model's protected aliases as stored now (a caller's copy of the model may be older)."""
    stored = RegisteredModel.objects.filter(pk=model.pk).values_list("protected_aliases", flat=True).first()
    return list(stored if stored is not None else model.protected_aliases or [])


def alias_permission(model: RegisteredModel, alias: str) -> str:
    """What creating, moving or deleting this alias needs: deploy when it is protected, write otherwise."""
    return DEPLOY if alias in protected_aliases(model) else WRITE


# What each role may open in the admin console (Django's model permissions, "app.codename"): the console shows
# and hides pages by these; what an action may change is still decided by `check` in the services it calls.
_CONSOLE_APPS = ("registry", "serving", "features", "rollouts", "experiments", "monitoring")
_NOT_FOR_VIEWERS = {"serving.view_apikey", "registry.view_modelgrant", "serving.view_deadletter",
                    "registry.view_webhookendpoint", "registry.view_webhookdelivery"}  # fmt: skip
CONSOLE: dict[str, tuple[str, ...]] = {
    VIEWER: ("view:*",),
    DATA_SCIENTIST: (
        "view:*", "registry.add_registeredmodel", "registry.change_registeredmodel", "registry.add_modelversion",
        "registry.change_modelversion", "experiments.add_experiment", "experiments.change_experiment",
        "monitoring.add_monitor", "monitoring.change_monitor", "monitoring.change_alert", "serving.add_batchjob",
        "serving.add_batchschedule", "serving.change_batchschedule",
    ),
    DEPLOYER: (
        "view:*", "registry.change_registeredmodel", "registry.change_modelversion", "rollouts.add_rollout",
        "rollouts.change_rollout", "experiments.change_experiment",
    ),
    ADMIN_ROLE: (
        "view:*", "serving.view_apikey", "serving.add_apikey", "serving.change_apikey", "serving.view_servingpolicy",
        "serving.add_servingpolicy", "serving.change_servingpolicy", "serving.view_deadletter",
        "serving.delete_deadletter", "registry.view_modelgrant", "registry.add_modelgrant",
        "registry.delete_modelgrant", "registry.view_webhookendpoint", "registry.add_webhookendpoint",
        "registry.change_webhookendpoint", "registry.delete_webhookendpoint", "registry.view_webhookdelivery",
        "auth.view_user", "auth.add_user", "auth.change_user", "auth.view_group",
        "auth.change_group",
    ),
}  # fmt: skip


def ensure_roles(using: str = "default") -> None:
    """The role groups exist with their console permissions (the data migration creates the groups; this, run
    after every migrate and flush, keeps their permissions as CONSOLE says)."""
    from django.contrib.auth.models import Group, Permission

    rows = Permission.objects.using(using).values_list("pk", "content_type__app_label", "codename")
    available = {f"{app}.{codename}": pk for pk, app, codename in rows}
    views = [pk for name, pk in available.items() if name.split(".")[0] in _CONSOLE_APPS and ".view_" in name
             and name not in _NOT_FOR_VIEWERS]  # fmt: skip
    for role, names in CONSOLE.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        wanted = {available[name] for name in names if name in available}
        if "view:*" in names:
            wanted.update(views)
        group.permissions.set(wanted)
