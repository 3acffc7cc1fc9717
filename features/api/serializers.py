"""Feature store API shapes. Definitions are validated by features/definitions.py (shared with apply_features)."""

from __future__ import annotations

from rest_framework import serializers

from features.models import Entity, FeatureView


class EntitySerializer(serializers.ModelSerializer):
    class Meta:
        model = Entity
        fields = ["name", "join_key", "value_type", "description", "created_at", "updated_at"]


class FeatureViewSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = FeatureView
        fields = ["name", "entity", "features", "ttl_seconds", "created_timestamp_column", "owner", "description",
                  "tags", "newest_event_at", "materialized_until", "created_at", "updated_at"]  # fmt: skip


class FeatureSpecSerializer(serializers.Serializer):
    name = serializers.CharField()
    dtype = serializers.ChoiceField(choices=["float", "int", "bool", "string"])
    description = serializers.CharField(required=False, allow_blank=True)


class FeatureViewWriteSerializer(serializers.Serializer):
    name = serializers.CharField()
    entity = serializers.CharField()
    features = FeatureSpecSerializer(many=True)
    ttl = serializers.JSONField(help_text="seconds, or a duration like 90m, 12h, 30d")
    created_timestamp_column = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="the column of pushed/ingested rows giving each value's created time (default created_timestamp; "
        "empty: none, every value is created when written)",
    )
    owner = serializers.CharField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.DictField(child=serializers.CharField(), required=False)


class EntityWriteSerializer(serializers.Serializer):
    name = serializers.CharField()
    join_key = serializers.CharField()
    value_type = serializers.ChoiceField(choices=["string", "int"], default="string")
    description = serializers.CharField(required=False, allow_blank=True)


class PushSerializer(serializers.Serializer):
    rows = serializers.ListField(
        child=serializers.DictField(),
        help_text='[{join_key: id, "event_timestamp": time, "created_timestamp": time (optional), feature: value}]',
    )


class OnlineRequestSerializer(serializers.Serializer):
    features = serializers.ListField(child=serializers.CharField(), help_text='["view:feature", ...]')
    entities = serializers.ListField(child=serializers.DictField(), help_text="[{join_key: id}, ...]")
    overrides = serializers.ListField(child=serializers.DictField(), required=False)
