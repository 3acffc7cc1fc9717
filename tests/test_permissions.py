"""Who may do what (registry/permissions.py, config/access.py): roles, per-model grants and API key scopes, checked
against every URL of the API and every admin action that moves traffic."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from registry import permissions
from registry import services as registry
from registry.models import ModelAlias
from rollouts import services as rollouts
from serving.keys import api_key_create
from serving.tokens import user_token_create

pytestmark = pytest.mark.django_db


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=user)[1]}")
    return client


def key_client(*scopes: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='t', scopes=list(scopes))[1]}")


def with_roles(django_user_model, username: str, *roles: str):
    permissions.ensure_roles()
    person = django_user_model.objects.create_user(username=username, password="correct horse battery staple")
    person.groups.add(*Group.objects.filter(name__in=roles))
    return person


@pytest.fixture
def two_models(db, logreg):
    """Models a and b, each with v1 in production and a validated v2."""
    made = {}
    for name in ("a", "b"):
        model = registry.registered_model_create(name=name, task="classification")
        v1 = registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
        registry.alias_create(model=model, name="production", version=v1)
        registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
        made[name] = model
    return made


def production(name: str) -> int:
    return ModelAlias.objects.select_related("version").get(model__name=name, name="production").version.version


def test_a_token_without_permissions_cannot_move_production_or_roll_back(django_user_model, two_models):
    nobody = token_client(django_user_model.objects.create_user(username="nobody", password="x" * 12))
    moved = nobody.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
    assert moved.status_code == 403
    assert moved.json() == {"detail": "nobody lacks the permission deploy:a", "missing_permission": "deploy:a"}
    assert production("a") == 1
    registry.alias_move(model=two_models["a"], name="production", version=two_models["a"].versions.get(version=2))
    rolled = nobody.post("/api/v1/models/a/rollback/", {}, format="json")
    assert rolled.status_code == 403 and production("a") == 2


def test_a_viewer_may_read_but_not_move_production(django_user_model, two_models):
    viewer = token_client(with_roles(django_user_model, "vera", permissions.VIEWER))
    assert viewer.get("/api/v1/models/a/aliases/production/").status_code == 200
    moved = viewer.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
    assert moved.status_code == 403
    assert moved.json() == {"detail": "vera lacks the permission deploy:a", "missing_permission": "deploy:a"}
    assert production("a") == 1


def test_a_deployer_limited_to_a_cannot_promote_b(django_user_model, two_models):
    person = with_roles(django_user_model, "dee", permissions.VIEWER)
    registry.model_grant_give(model=two_models["a"], permission="deploy", user=person)
    client = token_client(person)
    started = {}
    for name in ("a", "b"):  # started by the platform (no actor), steered by the limited deployer
        started[name] = rollouts.rollout_start(
            model=two_models[name], candidate=two_models[name].versions.get(version=2)
        )
    refused = client.post(f"/api/v1/rollouts/{started['b'].pk}/promote/")
    assert refused.status_code == 403 and refused.json()["missing_permission"] == "deploy:b"
    assert production("b") == 1
    assert client.post(f"/api/v1/rollouts/{started['a'].pk}/promote/").status_code == 200
    assert production("a") == 2
    # and the same through the service itself, as the admin console and commands call it
    with pytest.raises(permissions.PermissionRefused, match="deploy:b"):
        rollouts.rollout_promote(rollout=started["b"], actor=person)


def test_a_predict_key_or_a_registry_write_key_cannot_move_production(two_models):
    for scopes in (["predict:*"], ["registry:read", "registry:write"], ["deploy:b", "registry:read"]):
        moved = key_client(*scopes).put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
        assert moved.status_code == 403, scopes
    assert production("a") == 1
    deployer = key_client("deploy:a")
    assert deployer.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json").status_code == 200
    assert production("a") == 2


# --- The matrix: every URL of the API against every role ------------------------------------------------------------

READ, WRITE, ADMIN = "read", "write", "admin"
PREDICT_ANY = "predict:*"  # predict on every model: any active user, and the predict key
DEPLOY_A, DEPLOY_B = "deploy:a", "deploy:b"

# What each route needs, written out here (not read from config/access.py), so that a changed or new route fails
# until it is classified. Routes on a model run on models a and b; DEPLOY means deploy on that model.
DEPLOY = "deploy"
EXPECTED_API: dict[str, dict[str, str]] = {
    "model-list": {"GET": READ, "POST": WRITE},
    "model-detail": {"GET": READ, "PATCH": WRITE},
    "version-list": {"GET": READ, "POST": WRITE},
    "version-detail": {"GET": READ},
    "version-archive": {"POST": WRITE},
    "version-onnx": {"POST": WRITE},
    "version-runtime": {"PUT": WRITE},
    "version-quantize": {"POST": WRITE},
    "artifact": {"GET": READ},
    "alias-list": {"GET": READ, "POST": DEPLOY},  # posted: {"alias": "production"}, a protected alias
    "alias-detail": {"GET": READ, "PUT": DEPLOY, "DELETE": DEPLOY},  # the production alias
    "event-list": {"GET": READ},
    "webhook-list": {"GET": ADMIN, "POST": ADMIN},
    "webhook-detail": {"GET": ADMIN, "DELETE": ADMIN},
    "webhook-deliveries": {"GET": ADMIN},
    "rollout-list": {"GET": READ, "POST": DEPLOY},
    "model-rollback": {"POST": DEPLOY},
    "rollout-detail": {"GET": READ},
    "rollout-pause": {"POST": DEPLOY},
    "rollout-resume": {"POST": DEPLOY},
    "rollout-promote": {"POST": DEPLOY},
    "rollout-abort": {"POST": DEPLOY},
    "feedback": {"POST": WRITE},
    "events": {"POST": WRITE},
    "monitor-list": {"GET": READ, "POST": WRITE},
    "monitor-detail": {"GET": READ},
    "monitor-run": {"POST": WRITE},
    "monitor-reports": {"GET": READ},
    "monitor-alerts": {"GET": READ},
    "alert-list": {"GET": READ},
    "alert-detail": {"GET": READ},
    "alert-acknowledge": {"POST": WRITE},
    "alert-resolve": {"POST": WRITE},
    "alert-silence": {"POST": WRITE},
    "reference": {"POST": WRITE},
    "distill": {"POST": WRITE},
    "quality": {"GET": READ},
    "experiment-list": {"GET": READ, "POST": WRITE},
    "experiment-detail": {"GET": READ},
    "experiment-start": {"POST": WRITE},
    "experiment-stop": {"POST": WRITE},
    "experiment-weights": {"POST": WRITE},
    "experiment-conclude": {"POST": DEPLOY},
    "experiment-results": {"GET": READ},
    "experiment-events": {"GET": READ},
    "feature-entity-list": {"GET": READ, "POST": WRITE},
    "feature-view-list": {"GET": READ, "POST": WRITE},
    "feature-view-detail": {"GET": READ},
    "feature-online": {"POST": READ},
    "feature-historical": {"POST": READ},
    "feature-push": {"POST": WRITE},
    "api-key-list": {"GET": ADMIN, "POST": ADMIN},
    "api-key-detail": {"GET": ADMIN},
    "api-key-revoke": {"POST": ADMIN},
    "subject-erase": {"POST": ADMIN},
    "subject-export": {"POST": ADMIN},
    "audit-list": {"GET": ADMIN},
    "batch-job-list": {"GET": PREDICT_ANY, "POST": PREDICT_ANY},
    "batch-job-detail": {"GET": PREDICT_ANY},
    "batch-job-cancel": {"POST": PREDICT_ANY},
}
# Routes outside the API's permission map: public, the prediction endpoints (an API key with predict:<model>, or any
# active user's token), any logged-in caller (the schema and its docs page), or a scraper (the scrape token or an
# allowed network, whoever the caller is otherwise: config/scrape.py).
PUBLIC, PREDICT, LOGGED_IN, SCRAPER = "public", "predict", "logged in", "scraper"
EXPECTED_OTHER: dict[str, str] = {
    "healthz": PUBLIC, "readyz": PUBLIC, "v2-server": PUBLIC, "v2-live": PUBLIC, "v2-ready": PUBLIC,
    "api-token": PUBLIC, "prometheus-django-metrics": SCRAPER, "monitoring-metrics": SCRAPER,
    "predict": PREDICT, "invocations": PREDICT, "v2-infer": PREDICT, "v2-model": PREDICT, "v2-model-ready": PREDICT,
    "v2-model-version": PREDICT, "v2-model-version-ready": PREDICT,
    # an asynchronous prediction's answer: any caller may ask; only the one that sent it (or an admin) gets it
    "prediction": PREDICT,
    "schema": LOGGED_IN, "api-docs": LOGGED_IN,
}  # fmt: skip
ON_A_MODEL = {"model-detail", "version-list", "version-detail", "version-archive", "version-onnx", "version-runtime",
              "version-quantize", "artifact", "alias-list",
              "alias-detail", "event-list", "rollout-list", "model-rollback", "reference", "quality",
              "distill", "batch-job-list"}  # fmt: skip
ON_A_ROLLOUT = {"rollout-detail", "rollout-pause", "rollout-resume", "rollout-promote", "rollout-abort"}
ON_AN_EXPERIMENT = {"experiment-detail", "experiment-start", "experiment-stop", "experiment-weights",
                    "experiment-conclude", "experiment-results", "experiment-events"}  # fmt: skip

# role -> what it holds; anonymous is answered 401, every other refusal 403
ROLES: dict[str, set[str]] = {
    "anonymous": set(),
    "no permissions": {PREDICT_ANY},
    "viewer": {READ, PREDICT_ANY},
    "data scientist": {READ, WRITE, PREDICT_ANY},
    "deployer": {READ, DEPLOY_A, DEPLOY_B, PREDICT_ANY},
    "deployer of a": {READ, DEPLOY_A, PREDICT_ANY},
    "admin": {READ, ADMIN, PREDICT_ANY},
    "predict key": {PREDICT_ANY},
    "superuser": {READ, WRITE, DEPLOY_A, DEPLOY_B, ADMIN, PREDICT_ANY},
}


def walk(patterns, prefix: str = ""):
    from django.urls import URLResolver

    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.name


def test_every_url_is_in_the_matrix():
    from django.urls import get_resolver

    unclassified = [
        (route, name)
        for route, name in walk(get_resolver().url_patterns)
        if not route.startswith("admin/") and name not in EXPECTED_API and name not in EXPECTED_OTHER
    ]
    assert unclassified == [], "classify these routes in EXPECTED_API or EXPECTED_OTHER (and config/access.py)"
    from config.access import RULES

    assert {name: set(rules) for name, rules in RULES.items()} == {
        name: set(methods) for name, methods in EXPECTED_API.items()
    }


def client_for(role: str, django_user_model) -> APIClient:
    if role == "anonymous":
        return APIClient()
    if role == "predict key":
        return key_client("predict:*")
    if role == "superuser":
        return token_client(django_user_model.objects.create_superuser(username="root", password="x" * 12))
    roles = {"viewer": [permissions.VIEWER], "data scientist": [permissions.DATA_SCIENTIST],
             "deployer": [permissions.DEPLOYER], "deployer of a": [permissions.VIEWER],
             "admin": [permissions.ADMIN_ROLE], "no permissions": []}[role]  # fmt: skip
    person = with_roles(django_user_model, role.replace(" ", "-"), *roles)
    if role == "deployer of a":
        registry.model_grant_give(model=model_named("a"), permission="deploy", user=person)
    return token_client(person)


def model_named(name: str):
    from registry.models import RegisteredModel

    return RegisteredModel.objects.get(name=name)


@pytest.fixture
def world(two_models):
    """A rollout and a draft experiment on each model, a monitor with an alert, an API key: every route has a row."""
    from experiments import services as experiments
    from monitoring.models import Alert, AlertKind, Monitor
    from registry.models import WebhookEndpoint
    from serving.batch_models import BatchJob, JobStatus

    made = {"rollout": {}, "experiment": {}}
    for name, model in two_models.items():
        made["experiment"][name] = experiments.experiment_create(
            model=model, name=f"exp-{name}", primary_metric={"kind": "conversion", "event": "purchase"},
            arms=[{"name": "control", "version": 1, "weight": 50}, {"name": "new", "version": 2, "weight": 50}],
        )  # fmt: skip
        made["rollout"][name] = rollouts.rollout_start(model=model, candidate=model.versions.get(version=2))
    monitor = Monitor.objects.create(model=two_models["a"], name="hourly")
    made["monitor"] = monitor
    made["alert"] = Alert.objects.create(monitor=monitor, version=1, kind=AlertKind.QUALITY, subject="f1", message="m")
    made["key"] = api_key_create(name="listed", scopes=["predict:*"])[0]
    made["batch_job"] = {name: BatchJob.objects.create(
        model=model, version=model.versions.get(version=1), input_uri="/nowhere/in.parquet", input_format="parquet",
        output_uri="/nowhere/out", chunk_rows=100, parallelism=1, max_reject_share=0.0, status=JobStatus.RUNNING,
    ) for name, model in two_models.items()}  # fmt: skip
    made["webhook"] = WebhookEndpoint.objects.create(url="https://hooks.example.com/x", event_types=["alias.moved"],
                                                     active=False)  # fmt: skip
    return made


def requests_of(name: str, world) -> list[tuple[str, str, str | None]]:
    """(method, path, the model it acts on) for each method of the route, once per model where it has one."""
    from django.urls import reverse

    targets: list[tuple[dict, str | None]]
    if name in ON_A_MODEL:
        targets = [({"name": m}, m) for m in ("a", "b")]
    elif name in ON_A_ROLLOUT:
        targets = [({"pk": world["rollout"][m].pk}, m) for m in ("a", "b")]
    elif name in ON_AN_EXPERIMENT:
        targets = [({"name": f"exp-{m}"}, m) for m in ("a", "b")]
    elif name.startswith("monitor-") and name != "monitor-list":
        targets = [({"pk": world["monitor"].pk}, "a")]
    elif name.startswith("alert-") and name != "alert-list":
        targets = [({"pk": world["alert"].pk}, None)]
    elif name.startswith("api-key-") and name != "api-key-list":
        targets = [({"pk": world["key"].pk}, None)]
    elif name in ("batch-job-detail", "batch-job-cancel"):
        targets = [({"pk": world["batch_job"][m].pk}, m) for m in ("a", "b")]
    elif name.startswith("webhook-") and name != "webhook-list":
        targets = [({"pk": world["webhook"].pk}, None)]
    elif name in ("feature-view-detail", "feature-push"):
        targets = [({"name": "no-such-view"}, None)]
    else:
        targets = [({}, None)]
    found = []
    for kwargs, model in targets:
        kwargs = dict(kwargs)
        if name in (
            "version-detail",
            "version-archive",
            "version-onnx",
            "version-runtime",
            "version-quantize",
            "artifact",
            "reference",
            "quality",
            "distill",
        ):
            kwargs["version"] = 2
        if name == "alias-detail":
            kwargs["alias"] = "production"
        found += [(method, reverse(name, kwargs=kwargs), model) for method in EXPECTED_API[name]]
    return found


BODIES = {"alias-list": {"alias": "production", "version": 2}, "alias-detail": {"version": 2},
          "version-runtime": {"runtime": ""},
          "api-key-list": {"name": "new", "scopes": ["predict:*"]},
          "webhook-list": {"url": "http://127.0.0.1:9/hook", "event_types": ["alias.moved"]},
          "subject-erase": {"key": "nobody", "dry_run": True}, "subject-export": {"key": "nobody"}}  # fmt: skip


@pytest.mark.parametrize("role", list(ROLES))
def test_every_api_route_against_every_role(role, django_user_model, world):
    client = client_for(role, django_user_model)
    wrong = []
    for name, methods in EXPECTED_API.items():
        for method, path, model in requests_of(name, world):
            needed = methods[method]
            needed = f"deploy:{model}" if needed == DEPLOY else needed
            answer = getattr(client, method.lower())(path, BODIES.get(name, {}), format="json")
            allowed = needed in ROLES[role]
            refused_with = 401 if role == "anonymous" else 403
            if allowed and answer.status_code in (401, 403) or answer.status_code >= 500:
                wrong.append((method, path, "should pass", answer.status_code, answer.content[:200]))
            elif not allowed and answer.status_code != refused_with:
                wrong.append((method, path, f"should be {refused_with}", answer.status_code, answer.content[:200]))
            elif not allowed and role != "anonymous" and "missing_permission" not in answer.json():
                wrong.append((method, path, "should name the missing permission", answer.json()))
    assert wrong == []


@pytest.mark.parametrize("role", list(ROLES))
def test_every_other_route_against_every_role(role, django_user_model, two_models):
    from django.urls import reverse

    client = client_for(role, django_user_model)
    paths = {"predict": reverse("predict", kwargs={"name": "a"}), "v2-infer": "/v2/models/a/infer",
             "invocations": "/api/v1/models/a/invocations", "v2-model": "/v2/models/a",
             "v2-model-ready": "/v2/models/a/ready", "v2-model-version": "/v2/models/a/versions/1",
             "v2-model-version-ready": "/v2/models/a/versions/1/ready",
             "prediction": "/api/v1/predictions/00000000-0000-4000-8000-000000000000"}  # fmt: skip
    wrong = []
    for name, kind in EXPECTED_OTHER.items():
        path = paths.get(name) or reverse(name)
        method = "post" if name in ("predict", "v2-infer", "invocations", "api-token") else "get"
        # From outside the allowed networks (the test client's default address is loopback, which is allowed)
        answer = getattr(client, method)(path, {}, format="json", REMOTE_ADDR="198.51.100.7")
        allowed = kind == PUBLIC or role != "anonymous" and kind != SCRAPER
        if name == "api-docs":  # a page for a browser session: a token or key is sent to the login page
            ok = answer.status_code == 302
        elif allowed:
            ok = answer.status_code not in (401, 403) and answer.status_code < 500
        else:
            ok = answer.status_code in (401, 403)
        if not ok:
            wrong.append((name, path, allowed, answer.status_code))
    assert wrong == []


# --- Every admin action that changes traffic, against every role -----------------------------------------------------

CONSOLE_ROLES: dict[str, tuple[list[str], set[str]]] = {  # role -> (groups, what it holds on model b)
    "anonymous": ([], set()),
    "no permissions": ([], set()),
    "viewer": ([permissions.VIEWER], {READ}),
    "data scientist": ([permissions.DATA_SCIENTIST], {READ, WRITE}),
    "deployer": ([permissions.DEPLOYER], {READ, DEPLOY}),
    "deployer of a": ([permissions.VIEWER], {READ}),
    "admin": ([permissions.ADMIN_ROLE], {READ, ADMIN}),
    "superuser": ([], {READ, WRITE, DEPLOY, ADMIN}),
}


def console_for(role: str, django_user_model, two_models):
    from django.test import Client

    client = Client()
    if role == "anonymous":
        return client
    if role == "superuser":
        person = django_user_model.objects.create_superuser(username="root", password="x" * 12)
    else:
        person = with_roles(django_user_model, role.replace(" ", "-"), *CONSOLE_ROLES[role][0])
        person.is_staff = True  # the console lets staff in; what they may do is their roles'
        person.save()
    if role == "deployer of a":
        registry.model_grant_give(model=two_models["a"], permission="deploy", user=person)
    client.force_login(person)
    return client


def _status(app_model: str, pk: int) -> str:
    from django.apps import apps

    return apps.get_model(app_model).objects.get(pk=pk).status


def admin_actions(two_models):
    """action -> (what it needs, do it with a console client, did it happen): each on model b."""
    from django.urls import reverse

    from experiments import services as experiments

    b = two_models["b"]
    v1, v2 = b.versions.get(version=1), b.versions.get(version=2)

    def changelist_action(app_model: str, action: str, pk: int):
        url = reverse(f"admin:{app_model.replace('.', '_')}_changelist")
        return lambda client: client.post(url, {"action": action, "_selected_action": [pk]})

    def rollout_control(action: str):
        def run(client):
            rollout = rollouts.rollout_start(model=b, candidate=v2)
            return client.post(reverse("admin:rollouts_rollout_control", args=[rollout.pk, action]))

        return run

    def experiment(action: str, running: bool, **data):
        def run(client):
            made = experiments.experiment_create(
                model=b, name="exp-b", primary_metric={"kind": "conversion", "event": "purchase"},
                arms=[{"name": "control", "version": 1, "weight": 50}, {"name": "new", "version": 2, "weight": 50}],
            )  # fmt: skip
            if running:
                experiments.experiment_start(experiment=made)
            return client.post(reverse("admin:experiments_experiment_act", args=[made.pk, action]), data)

        return run

    def rolled_back(client):
        registry.alias_move(model=b, name="production", version=v2)
        return changelist_action("registry.registeredmodel", "roll_back_production", b.pk)(client)

    def started(client):
        return client.post(
            reverse("admin:rollouts_rollout_start"),
            {"candidate": v2.pk, "mode": "canary", "stages": "10,100", "stage_seconds": 60, "shadow_percent": 0},
        )  # fmt: skip

    from experiments.models import Experiment
    from rollouts.models import Rollout

    def rollout_status():
        return Rollout.objects.filter(model=b).values_list("status", flat=True).first()

    def experiment_status():
        return Experiment.objects.filter(model=b).values_list("status", flat=True).first()

    return {
        "version: promote to production": (
            DEPLOY, changelist_action("registry.modelversion", "promote_to_production", v2.pk),
            lambda: production("b") == 2,
        ),
        "version: archive": (
            WRITE, changelist_action("registry.modelversion", "archive", v2.pk),
            lambda: _status("registry.ModelVersion", v2.pk) == "archived",
        ),
        "model: roll back production": (DEPLOY, rolled_back, lambda: production("b") == 1),
        "rollout: start": (DEPLOY, started, lambda: rollout_status() is not None),
        "rollout: pause": (DEPLOY, rollout_control("pause"), lambda: rollout_status() == "paused"),
        "rollout: promote": (DEPLOY, rollout_control("promote"), lambda: production("b") == 2),
        "rollout: abort": (DEPLOY, rollout_control("abort"), lambda: rollout_status() == "aborted"),
        "experiment: start": (WRITE, experiment("start", False), lambda: experiment_status() == "running"),
        "experiment: stop": (WRITE, experiment("stop", True), lambda: experiment_status() == "stopped"),
        "experiment: conclude": (
            DEPLOY, experiment("conclude", True, winner="new"), lambda: production("b") == 2 and v1.pk,
        ),
    }  # fmt: skip


ADMIN_ACTIONS = [
    "version: promote to production", "version: archive", "model: roll back production", "rollout: start",
    "rollout: pause", "rollout: promote", "rollout: abort", "experiment: start", "experiment: stop",
    "experiment: conclude",
]  # fmt: skip


@pytest.mark.parametrize("action", ADMIN_ACTIONS)
@pytest.mark.parametrize("role", list(CONSOLE_ROLES))
def test_every_admin_action_against_every_role(role, action, django_user_model, two_models):
    actions = admin_actions(two_models)
    assert sorted(actions) == sorted(ADMIN_ACTIONS)
    needed, run, happened = actions[action]
    answer = run(console_for(role, django_user_model, two_models))
    allowed = needed in CONSOLE_ROLES[role][1]
    assert answer.status_code < 500
    assert bool(happened()) == allowed, (answer.status_code, answer.content[:300])
    if not allowed and role != "anonymous":
        assert answer.status_code in (302, 403)  # refused outright, or sent back with the console's message


def test_the_deployer_of_a_promotes_a_in_the_console(django_user_model, two_models):
    from django.urls import reverse

    client = console_for("deployer of a", django_user_model, two_models)
    v2 = two_models["a"].versions.get(version=2)
    url = reverse("admin:registry_modelversion_changelist")
    client.post(url, {"action": "promote_to_production", "_selected_action": [v2.pk]})
    assert production("a") == 2


# --- Grants given and revoked while moves are attempted --------------------------------------------------------------


def test_production_moves_only_when_the_actor_holds_deploy_at_that_moment(django_user_model, two_models):
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

    permissions.ensure_roles()
    people = [django_user_model.objects.create_user(username=f"p{i}", password="x" * 12) for i in range(2)]
    team = Group.objects.create(name="team")
    deployers = Group.objects.get(name=permissions.DEPLOYER)
    tokens = {person.pk: token_client(person) for person in people}
    models = two_models

    class Grants(RuleBasedStateMachine):
        @initialize()
        def reset(self) -> None:
            from registry.models import ModelGrant

            ModelGrant.objects.all().delete()
            for person in people:
                person.groups.clear()
            for model in models.values():
                registry.alias_move(model=model, name="production", version=model.versions.get(version=1))
            self.direct: set[tuple[int, str]] = set()
            self.team_grants: set[str] = set()
            self.in_team: set[int] = set()
            self.deployer_role: set[int] = set()
            self.where = {name: 1 for name in models}

        def holds(self, person, name: str) -> bool:
            return (
                (person.pk, name) in self.direct
                or person.pk in self.deployer_role
                or (person.pk in self.in_team and name in self.team_grants)
            )

        @rule(who=st.sampled_from(people), name=st.sampled_from(["a", "b"]), give=st.booleans())
        def grant_to_person(self, who, name, give) -> None:
            if give:
                registry.model_grant_give(model=models[name], permission="deploy", user=who)
                self.direct.add((who.pk, name))
            else:
                from registry.models import ModelGrant

                ModelGrant.objects.filter(model=models[name], user=who).delete()
                self.direct.discard((who.pk, name))

        @rule(name=st.sampled_from(["a", "b"]), give=st.booleans(), permission=st.sampled_from(["deploy", "own"]))
        def grant_to_team(self, name, give, permission) -> None:
            from registry.models import ModelGrant

            ModelGrant.objects.filter(model=models[name], group=team).delete()
            if give:
                registry.model_grant_give(model=models[name], permission=permission, group=team)
                self.team_grants.add(name)
            else:
                self.team_grants.discard(name)

        @rule(who=st.sampled_from(people), join=st.booleans(), group=st.sampled_from(["team", "deployer"]))
        def membership(self, who, join, group) -> None:
            target, members = (team, self.in_team) if group == "team" else (deployers, self.deployer_role)
            if join:
                who.groups.add(target)
                members.add(who.pk)
            else:
                who.groups.remove(target)
                members.discard(who.pk)

        @rule(who=st.sampled_from(people), name=st.sampled_from(["a", "b"]), through_api=st.booleans())
        def move_production(self, who, name, through_api) -> None:
            target = 3 - self.where[name]
            allowed = self.holds(who, name)
            if through_api:
                answer = tokens[who.pk].put(
                    f"/api/v1/models/{name}/aliases/production/", {"version": target}, format="json"
                )
                assert answer.status_code == (200 if allowed else 403), answer.content
            else:
                try:
                    registry.alias_move(
                        model=models[name], name="production", version=models[name].versions.get(version=target),
                        actor=who,
                    )  # fmt: skip
                except permissions.PermissionRefused:
                    assert not allowed
                else:
                    assert allowed
            if allowed:
                self.where[name] = target

        @invariant()
        def production_is_where_allowed_moves_put_it(self) -> None:
            if hasattr(self, "where"):
                assert {name: production(name) for name in models} == self.where

    run_state_machine_as_test(
        Grants,
        settings=settings(
            max_examples=15, stateful_step_count=12, deadline=None, derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )  # fmt: skip


# --- Protected aliases, grants, raw inputs ---------------------------------------------------------------------------


def test_protected_aliases_are_per_model_and_guarded_by_deploy(django_user_model, two_models):
    scientist = token_client(with_roles(django_user_model, "sci", permissions.DATA_SCIENTIST))
    made = scientist.post("/api/v1/models/a/aliases/", {"alias": "staging", "version": 2}, format="json")
    assert made.status_code == 201  # an unprotected alias: write is enough
    widened = scientist.patch("/api/v1/models/a/", {"protected_aliases": ["production", "staging"]}, format="json")
    assert widened.status_code == 403 and widened.json()["missing_permission"] == "deploy:a"
    deployer = with_roles(django_user_model, "dep", permissions.DEPLOYER, permissions.DATA_SCIENTIST)
    both = token_client(deployer)
    dropped = both.patch("/api/v1/models/a/", {"protected_aliases": ["staging"]}, format="json")
    assert dropped.status_code == 400 and "always protected" in str(dropped.json()["protected_aliases"])
    widened = both.patch("/api/v1/models/a/", {"protected_aliases": ["production", "staging"]}, format="json")
    assert widened.status_code == 200 and widened.json()["protected_aliases"] == ["production", "staging"]
    moved = scientist.put("/api/v1/models/a/aliases/staging/", {"version": 1}, format="json")
    assert moved.status_code == 403 and moved.json()["missing_permission"] == "deploy:a"
    assert scientist.delete("/api/v1/models/a/aliases/staging/").status_code == 403
    assert both.put("/api/v1/models/a/aliases/staging/", {"version": 1}, format="json").status_code == 200
    # model b keeps the default: staging there is the data scientist's
    assert (
        scientist.post("/api/v1/models/b/aliases/", {"alias": "staging", "version": 2}, format="json").status_code
        == 201
    )


def test_grants_are_given_by_admins_only(django_user_model, two_models):
    person = with_roles(django_user_model, "dee", permissions.VIEWER)
    deployer = with_roles(django_user_model, "boss", permissions.DEPLOYER)
    with pytest.raises(permissions.PermissionRefused, match="admin"):
        registry.model_grant_give(model=two_models["a"], permission="deploy", user=person, actor=deployer)
    admin = with_roles(django_user_model, "root-ish", permissions.ADMIN_ROLE)
    grant = registry.model_grant_give(model=two_models["a"], permission="deploy", user=person, actor=admin)
    assert permissions.holds(person, "deploy", two_models["a"]) and not permissions.holds(
        person, "deploy", two_models["b"]
    )
    with pytest.raises(ValidationError):
        registry.model_grant_give(model=two_models["a"], permission="fly", user=person, actor=admin)
    registry.model_grant_revoke(grant=grant, actor=admin)
    assert not permissions.holds(person, "deploy", two_models["a"])


def test_the_console_grants_page_gives_and_revokes_through_the_service(django_user_model, two_models):
    from django.urls import reverse

    from registry.models import ModelGrant

    person = with_roles(django_user_model, "dee", permissions.VIEWER)
    admin = console_for("admin", django_user_model, two_models)
    answer = admin.post(
        reverse("admin:registry_modelgrant_add"),
        {"model": two_models["b"].pk, "user": person.pk, "permission": "deploy"},
    )
    assert answer.status_code == 302, answer.content[:500]
    assert permissions.holds(person, "deploy", two_models["b"])
    viewer = console_for("viewer", django_user_model, two_models)
    assert viewer.get(reverse("admin:registry_modelgrant_changelist")).status_code == 403
    grant = ModelGrant.objects.get()
    admin.post(reverse("admin:registry_modelgrant_delete", args=[grant.pk]), {"post": "yes"})
    assert not ModelGrant.objects.exists()


def test_the_prediction_log_shows_raw_inputs_to_data_scientists_not_viewers(django_user_model, two_models):
    from django.urls import reverse
    from django.utils import timezone

    from serving.models import PredictionLog

    row = PredictionLog.objects.create(
        request_id="r1", model_name="a", version=1, inputs=[{"secret_feature": 123456789}], outputs={},
        latency_ms=1.0, route_reason="pinned", created_at=timezone.now(),
    )  # fmt: skip
    page = reverse("admin:serving_predictionlog_change", args=[row.pk])
    seen_by_viewer = console_for("viewer", django_user_model, two_models).get(page)
    assert seen_by_viewer.status_code == 200 and b"123456789" not in seen_by_viewer.content
    seen_by_scientist = console_for("data scientist", django_user_model, two_models).get(page)
    assert seen_by_scientist.status_code == 200 and b"123456789" in seen_by_scientist.content


def test_the_browsable_api_shows_a_viewer_the_page_without_the_forms_it_may_not_use(django_user_model, two_models):
    from django.test import Client

    viewer = with_roles(django_user_model, "vera", permissions.VIEWER)
    client = Client()
    client.force_login(viewer)
    for path in ("/api/v1/models/a/", "/api/v1/models/a/aliases/production/", "/api/v1/models/a/rollouts/"):
        page = client.get(path, HTTP_ACCEPT="text/html")
        assert page.status_code == 200, (path, page.content[:300])


def test_the_model_grant_command_gives_lists_and_revokes(django_user_model, two_models, capsys):
    from django.core.management import CommandError, call_command

    person = with_roles(django_user_model, "dee", permissions.VIEWER)
    call_command("model_grant", "give", "a", "deploy", "--user", "dee")
    assert permissions.holds(person, "deploy", two_models["a"])
    call_command("model_grant", "give", "b", "own", "--group", permissions.VIEWER)
    assert permissions.holds(person, "deploy", two_models["b"]) and permissions.holds(person, "write", two_models["b"])
    call_command("model_grant", "list", "a")
    assert "deploy\tuser dee" in capsys.readouterr().out
    call_command("model_grant", "revoke", "a", "deploy", "--user", "dee")
    assert not permissions.holds(person, "deploy", two_models["a"])
    for args, message in (
        (["give", "nope", "deploy", "--user", "dee"], "no registered model named 'nope'"),
        (["give", "a", "deploy", "--user", "nobody"], "no user named 'nobody'"),
        (["give", "a", "deploy"], "needs a permission and --user or --group"),
        (["revoke", "a", "write", "--user", "dee"], "user dee has no write grant on a"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("model_grant", *args)
