"""`POST /api/v1/auth/token/`: DRF's token endpoint, with each token handed out recorded in the audit trail. A
failed attempt is recorded by Django's user_login_failed signal (registry/audit.py), which DRF's authenticate sends."""

from __future__ import annotations

from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken

from registry import audit


class AuditedObtainAuthToken(ObtainAuthToken):
    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:
            user = Token.objects.select_related("user").get(key=response.data["token"]).user
            audit.record("auth.token", target=user, before=None, after=None, actor=user,
                         source=audit.current_source(), request=request)  # fmt: skip
        return response


obtain_auth_token = AuditedObtainAuthToken.as_view()
