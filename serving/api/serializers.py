"""API keys over REST: what a key looks like (never its raw value, except once in the create answer)."""

from __future__ import annotations

from rest_framework import serializers

from serving.models import ApiKey


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    active = serializers.BooleanField(read_only=True, help_text="not revoked and not expired")

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "scopes", "rate_limit_per_second", "expires_at", "revoked_at", "active",
            "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="the raw key: shown in this answer only, store it now")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    # Lengths, characters and scopes are checked by serving.keys.api_key_create, which answers per field.
    name = serializers.CharField(allow_blank=True, trim_whitespace=False)
    scopes = serializers.ListField(
        child=serializers.CharField(), allow_empty=True,
        help_text="predict:<model>, predict:*, registry:read, registry:write",
    )  # fmt: skip
    rate_limit_per_second = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, default=0, help_text="0: no limit"
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="send as `Authorization: Token <token>`; shown once")
    expiry = serializers.DateTimeField(help_text="after this the token is refused (MODELWORKS_TOKEN_TTL)")
