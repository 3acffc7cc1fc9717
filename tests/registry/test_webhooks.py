"""Webhooks for CI/CD (registry and rollout events): signed per Standard Webhooks and verified here by the
`standardwebhooks` reference package, refused at save and at delivery when the target is loopback, private,
link-local (metadata) or reserved, never following a redirect. Receivers are real HTTP servers on 127.0.0.1, which
the suite allows explicitly (tests/conftest.py); tests that need it refused narrow the allow-list."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from django.contrib.auth.models import Group
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from registry import permissions
from registry import services as registry
from registry.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from registry.webhooks import services as webhooks
from registry.webhooks.targets import TargetRefused, check_target, mask_url
from rollouts import services as rollouts
from serving.tokens import user_token_create
from tests.webhook_receiver import HookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def hook():
    receiver = HookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def admin_api(django_user_model) -> APIClient:
    permissions.ensure_roles()
    person = django_user_model.objects.create_user(username="root-ish", password="x" * 12)
    person.groups.add(Group.objects.get(name=permissions.ADMIN_ROLE))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=person)[1]}")
    return client


def deliver_all(attempts: int = 1) -> list[bool]:
    return [
        webhooks.webhook_delivery_attempt(delivery=d, attempt=1, attempts=attempts)
        for d in WebhookDelivery.objects.select_related("endpoint").order_by("id")
    ]


def test_a_new_version_and_its_verdict_arrive_signed_and_standardwebhooks_verifies_them(
    admin_api, classifier_model, logreg, hook
):
    made = admin_api.post(
        "/api/v1/webhooks/",
        {"url": hook.url, "event_types": ["version.registered", "version.validated", "version.rejected"],
         "model": "cancer", "description": "ci"},
        format="json",
    )  # fmt: skip
    assert made.status_code == 201, made.json()
    secret = made.json()["secret"]
    assert secret.startswith("whsec_")
    listed = admin_api.get("/api/v1/webhooks/").json()["results"]
    assert [e["id"] for e in listed] == [made.json()["id"]] and "secret" not in listed[0]
    assert "secret" not in admin_api.get(f"/api/v1/webhooks/{made.json()['id']}/").json()

    registry.model_version_register(model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    assert deliver_all() == [True, True]
    bodies = [Webhook(secret).verify(r.body, r.headers) for r in hook.received]
    assert [b["type"] for b in bodies] == ["version.registered", "version.validated"]
    assert bodies[0]["data"]["model"] == "cancer" and bodies[0]["data"]["version"] == 1
    assert bodies[1]["data"]["after"]["status"] == "validated"
    first = hook.received[0]
    assert first.path == "/hook?token=s3cret" and first.headers["Host"] == f"127.0.0.1:{hook.port}"
    with pytest.raises(WebhookVerificationError):  # a body changed on the way no longer verifies
        Webhook(secret).verify(first.body.replace(b"cancer", b"cancex"), first.headers)
    with pytest.raises(WebhookVerificationError):  # nor does anyone else's secret
        Webhook(webhooks.signing.new_secret()).verify(first.body, first.headers)
    deliveries = admin_api.get(f"/api/v1/webhooks/{made.json()['id']}/deliveries/").json()["results"]
    assert {(d["status"], d["attempts"], d["outcome"]) for d in deliveries} == {
        ("delivered", 1, "HTTP 200 after 1 attempt(s)")
    }
    assert {d["message_id"] for d in deliveries} == {r.headers["webhook-id"] for r in hook.received}


def test_alias_moves_reach_the_endpoints_subscribed_to_that_model_or_to_every_model(classifier_model, logreg, hook):
    cancer_only = webhooks.webhook_endpoint_create(
        url=hook.url, event_types=["alias.created", "alias.moved"], model=classifier_model
    )
    everywhere = webhooks.webhook_endpoint_create(url=hook.url, event_types=["alias.moved"])
    other = registry.registered_model_create(name="other", task="classification")
    webhooks.webhook_endpoint_create(url=hook.url, event_types=["alias.moved", "alias.created"], model=other)
    v1, v2 = (
        registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                        evaluation_data=logreg.eval_csv)
        for _ in range(2)
    )  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=v1)
    registry.alias_move(model=classifier_model, name="production", version=v2)
    sent = WebhookDelivery.objects.order_by("id").values_list("endpoint_id", "event_type")
    assert list(sent) == [
        (cancer_only.pk, "alias.created"), (cancer_only.pk, "alias.moved"), (everywhere.pk, "alias.moved"),
    ]  # fmt: skip
    assert deliver_all() == [True, True, True]
    moved = WebhookDelivery.objects.filter(event_type="alias.moved").first().payload
    assert moved["data"]["before"] == {"alias": "production", "version": 1}
    assert moved["data"]["after"] == {"alias": "production", "version": 2}


def test_rollout_decisions_are_webhook_events(classifier_model, logreg, hook):
    endpoint = webhooks.webhook_endpoint_create(url=hook.url, event_types=["rollout.created", "rollout.promoted"])
    v1 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=v1)
    v2 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    rollout = rollouts.rollout_start(model=classifier_model, candidate=v2)
    rollouts.rollout_promote(rollout=rollout)
    assert deliver_all() == [True, True]
    bodies = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in hook.received]
    assert [b["type"] for b in bodies] == ["rollout.created", "rollout.promoted"]
    expected = {"model": "cancer", "rollout": rollout.pk, "candidate": 2, "baseline": 1, "status": "promoted"}
    assert expected.items() <= bodies[1]["data"].items()


def test_a_failing_receiver_gets_every_attempt_with_one_webhook_id_until_one_succeeds(classifier_model, hook):
    endpoint = webhooks.webhook_endpoint_create(url=hook.url, event_types=["alias.moved"])
    hook.failures = 2
    (delivery,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={"x": 1})
    for attempt in (1, 2):
        with pytest.raises(webhooks.RetryLater):
            webhooks.webhook_delivery_attempt(delivery=delivery, attempt=attempt, attempts=3)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.outcome) == ("pending", f"HTTP 500 after {attempt} attempt(s), retrying")
    assert webhooks.webhook_delivery_attempt(delivery=delivery, attempt=3, attempts=3) is True
    assert {r.headers["webhook-id"] for r in hook.received} == {delivery.message_id} and len(hook.received) == 3
    for received in hook.received:
        assert Webhook(endpoint.secret).verify(received.body, received.headers) == delivery.payload
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    # a task redelivered after the outcome was recorded sends nothing again
    assert webhooks.webhook_delivery_attempt(delivery=delivery, attempt=1) is True and len(hook.received) == 3


REFUSED_AT_SAVE = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # the cloud metadata service
    "http://10.0.0.5/hook",
    "http://172.16.3.4:8080/hook",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space (carrier-grade NAT)
    "http://0.0.0.0:8000/",
    "http://[::1]:8000/",
    "http://[fd00:ec2::254]/",  # the metadata service over IPv6
    "http://[::ffff:127.0.0.1]/",
    "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://127.0.0.1:8000/hook\r\nX-Injected: 1",
    "http://localhost:8000/hook",
    "http://127.1/",  # short forms and integers resolve to loopback too
    "http://2130706433/",
    "file:///etc/passwd",
    "ftp://files.example.com/x",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "javascript:alert(1)",
    "http:///nohost",
]


@pytest.mark.parametrize("url", REFUSED_AT_SAVE)
def test_targets_that_are_not_public_http_are_refused_at_save_with_a_400_on_the_url(admin_api, settings, url):
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []  # loopback too, for this test
    answer = admin_api.post("/api/v1/webhooks/", {"url": url, "event_types": ["alias.moved"]}, format="json")
    assert answer.status_code == 400 and list(answer.json()) == ["url"], answer.json()
    assert WebhookDelivery.objects.count() == 0 and not admin_api.get("/api/v1/webhooks/").json()["results"]


def test_a_name_that_does_not_resolve_is_accepted_at_save_and_retried_at_delivery(classifier_model):
    endpoint = webhooks.webhook_endpoint_create(url="https://hooks.invalid/ci", event_types=["alias.moved"])
    (delivery,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    with pytest.raises(webhooks.RetryLater):
        webhooks.webhook_delivery_attempt(delivery=delivery, attempt=1, attempts=2)
    assert webhooks.webhook_delivery_attempt(delivery=delivery, attempt=2, attempts=2) is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.outcome) == ("failed", "the host did not resolve after 2 attempt(s)")
    assert endpoint.url == "https://hooks.invalid/ci"


def test_the_allow_list_lets_a_named_network_through(settings):
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert check_target("http://10.20.1.2:9000/hook?x=1").address == "10.20.1.2"
    with pytest.raises(TargetRefused, match="private address"):
        check_target("http://10.21.0.1/")
    with pytest.raises(TargetRefused, match="loopback"):
        check_target("http://127.0.0.1/")


NOT_PUBLIC = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
              "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10",
              "ff00::/8"]  # fmt: skip


@st.composite
def not_public_urls(draw) -> str:
    network = ipaddress.ip_network(draw(st.sampled_from(NOT_PUBLIC)))
    address = network[draw(st.integers(0, network.num_addresses - 1))]
    if address.version == 4:  # as itself, or inside an IPv6 address that reaches it (mapped, 6to4, NAT64)
        wrapped = {
            "plain": str(address), "mapped": f"[::ffff:{address}]",
            "6to4": f"[{ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80))}]",
            "nat64": f"[{ipaddress.IPv6Address(int(ipaddress.IPv6Address('64:ff9b::')) | int(address))}]",
        }  # fmt: skip
        host = wrapped[draw(st.sampled_from(sorted(wrapped)))]
    else:
        host = f"[{address}]"
    port = draw(st.sampled_from(["", ":80", ":6379", ":8443"]))
    userinfo = draw(st.sampled_from(["", "user:pw@"]))
    scheme = draw(st.sampled_from(["http", "https"]))
    return f"{scheme}://{userinfo}{host}{port}/{draw(st.text('abc/?=&', max_size=10))}"


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(url=not_public_urls())
def test_no_address_of_a_non_public_network_passes_the_guard_however_it_is_written(settings, url):
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    with pytest.raises(TargetRefused):
        check_target(url)


def test_a_target_allowed_at_save_is_refused_at_delivery_once_it_is_not(settings, classifier_model, hook):
    # Saved as a name resolving to an allowed address; by the delivery it resolves to a refused one (here: the
    # allow-list narrowed, as if the name now pointed at loopback): checked again, refused, nothing sent.
    endpoint = webhooks.webhook_endpoint_create(url=f"http://localhost:{hook.port}/hook", event_types=["alias.moved"])
    (delivery,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    assert webhooks.webhook_delivery_attempt(delivery=delivery, attempt=1, attempts=5) is False  # not retried
    delivery.refresh_from_db()
    assert hook.received == []
    assert (delivery.status, delivery.outcome) == (
        "failed",
        "refused: the target is not an allowed address after 1 attempt(s)",
    )
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    (again,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    assert webhooks.webhook_delivery_attempt(delivery=again) is True
    assert hook.received[0].headers["Host"] == f"localhost:{hook.port}"  # the name as Host, the checked address dialled
    assert endpoint.url.startswith("http://localhost")


def test_each_attempt_resolves_once_and_dials_the_address_it_checked(monkeypatch, classifier_model, hook):
    # A rebinding name: allowed when saved and at the delivery's check, internal whenever it is asked again. The
    # resolver (the one DNS function) answers from a script; the attempt must dial what it checked, asking once.
    from registry.webhooks import targets

    script = ["127.0.0.1", "127.0.0.1", "169.254.169.254"]  # save, the delivery's check, anything after
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return [script.pop(0) if len(script) > 1 else script[0]]

    monkeypatch.setattr(targets, "resolve", rebinding)
    url = f"http://hooks.rebind.test:{hook.port}/hook"
    endpoint = webhooks.webhook_endpoint_create(url=url, event_types=["alias.moved"])
    asked.clear()
    (delivery,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    assert webhooks.webhook_delivery_attempt(delivery=delivery) is True
    assert asked == ["hooks.rebind.test"]  # resolved once, for the check; the connection used that answer
    (received,) = hook.received
    assert received.headers["Host"] == f"hooks.rebind.test:{hook.port}"
    assert Webhook(endpoint.secret).verify(received.body, received.headers) == delivery.payload
    (again,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    assert webhooks.webhook_delivery_attempt(delivery=again) is False  # now it resolves to the metadata address
    again.refresh_from_db()
    assert again.outcome == "refused: the target is not an allowed address after 1 attempt(s)"
    assert len(hook.received) == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_redirect_is_not_followed_and_the_outcome_says_nothing_of_where_it_pointed(classifier_model, hook):
    outcomes = []
    for target in (f"http://127.0.0.1:{hook.port}/elsewhere", f"http://127.0.0.1:{_closed_port()}/"):
        redirecting = HookReceiver(redirect_to=target)
        try:
            WebhookEndpoint.objects.all().delete()
            webhooks.webhook_endpoint_create(url=redirecting.url, event_types=["alias.moved"])
            (delivery,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
            assert webhooks.webhook_delivery_attempt(delivery=delivery, attempt=1, attempts=5) is False
            assert len(redirecting.received) == 1  # one attempt: a redirect is not retried either
        finally:
            redirecting.close()
        delivery.refresh_from_db()
        outcomes.append((delivery.status, delivery.outcome))
    assert hook.received == []  # the listening port behind the first redirect heard nothing
    assert outcomes == [("failed", "HTTP 302: redirects are not followed after 1 attempt(s)")] * 2


def test_endpoint_input_is_checked_per_field(admin_api, hook):
    for body, field in (
        ({"url": hook.url, "event_types": []}, "event_types"),
        ({"url": hook.url, "event_types": ["version.deleted"]}, "event_types"),
        ({"url": hook.url, "event_types": ["alias.moved"], "model": "nope"}, "model"),
        ({"event_types": ["alias.moved"]}, "url"),
    ):
        answer = admin_api.post("/api/v1/webhooks/", body, format="json")
        assert answer.status_code == 400 and field in answer.json(), (body, answer.json())


def test_an_inactive_or_deleted_endpoint_hears_nothing(admin_api, classifier_model, hook):
    endpoint = webhooks.webhook_endpoint_create(url=hook.url, event_types=["alias.moved"])
    (queued,) = webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={})
    webhooks.webhook_endpoint_update(endpoint=endpoint, active=False)
    assert webhooks.webhook_event_fire(event_type="alias.moved", model=classifier_model, data={}) == []
    assert webhooks.webhook_delivery_attempt(delivery=queued) is False and hook.received == []
    assert admin_api.delete(f"/api/v1/webhooks/{endpoint.pk}/").status_code == 204
    assert not WebhookDelivery.objects.exists()


def test_masked_urls_keep_scheme_host_and_port_only():
    assert mask_url("https://hooks.example.com/services/T0/B0/XXXX") == "https://hooks.example.com/…"
    assert mask_url("http://user:token@hooks.example.com:8443/") == "http://hooks.example.com:8443/…"
    assert mask_url("https://hooks.example.com/?token=abc") == "https://hooks.example.com/…"
    assert mask_url("https://hooks.example.com") == "https://hooks.example.com/"
    assert mask_url("http://[::1]:80/x") == "http://[::1]:80/…"
    assert mask_url("") == ""
    assert DeliveryStatus.PENDING == "pending"
