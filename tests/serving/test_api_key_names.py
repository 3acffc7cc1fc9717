"""An API key's name that Postgres cannot store (NUL, a lone surrogate) or that is too long is refused with a
readable error by the service, the command and the admin, never a traceback."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from serving.keys import api_key_create
from serving.models import ApiKey

pytestmark = pytest.mark.django_db

UNSTORABLE = ["a\x00b", "caf\udce9", "\ud800", "x" * 101]


@pytest.mark.parametrize("name", UNSTORABLE)
def test_the_service_refuses_an_unstorable_name_naming_the_field(name):
    with pytest.raises(ValidationError) as refused:
        api_key_create(name=name, scopes=["predict:*"])
    assert list(refused.value.message_dict) == ["name"]
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("name", UNSTORABLE)
def test_the_command_exits_non_zero_with_one_readable_line(name):
    with pytest.raises(CommandError) as refused:
        call_command("create_api_key", name, "--scope", "predict:*")
    message = str(refused.value)
    assert message.startswith("name: ") and "\n" not in message
    message.encode("utf-8")  # printable: the bad character is not echoed
    assert not ApiKey.objects.exists()


def test_the_admin_form_shows_the_error(client, staff):
    client.force_login(staff)
    for name in ["a\x00b", "x" * 101]:
        response = client.post(
            "/admin/serving/apikey/add/",
            {"name": name, "scopes": '["predict:*"]', "rate_limit_per_second": "0", "expires_at": ""},
        )
        assert response.status_code == 200  # the form again, with its error
        assert response.context["adminform"].form.errors["name"]
    assert not ApiKey.objects.exists()


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.text(max_size=120) | st.text(st.sampled_from("ab \x00\ud800\udce9é"), max_size=110))
def test_any_name_is_stored_as_given_or_refused(name):
    try:
        key, _ = api_key_create(name=name, scopes=["predict:*"])
    except ValidationError as refused:
        assert list(refused.message_dict) == ["name"]
    else:
        assert ApiKey.objects.get(pk=key.pk).name == name.strip()
