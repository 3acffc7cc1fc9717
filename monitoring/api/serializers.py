from __future__ import annotations

from rest_framework import serializers

MAX_ITEMS = 10_000


class ActualField(serializers.JSONField):
    """A class label or number, or a list of them (one per row of a batched request)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise serializers.ValidationError("must be a class label or number, or a non-empty list of them")
        return value


class FeedbackItemSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=64, required=False)
    routing_key = serializers.CharField(max_length=200, required=False)
    model = serializers.SlugField(max_length=100, required=False, default="")
    time = serializers.DateTimeField(required=False, help_text="when the outcome was observed (default: now)")
    actual = ActualField()

    def validate(self, attrs):
        if not attrs.get("request_id") and not attrs.get("routing_key"):
            raise serializers.ValidationError({"request_id": ["give a request_id, or a routing_key (and time)"]})
        return attrs


class FeedbackBatchSerializer(serializers.Serializer):
    items = FeedbackItemSerializer(many=True, allow_empty=False, max_length=MAX_ITEMS)


class EventItemSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200, help_text="the routing key the predictions were made for")
    name = serializers.CharField(max_length=100)
    value = serializers.FloatField(default=1.0)
    time = serializers.DateTimeField(required=False, help_text="when it happened (default: now)")
    event_id = serializers.CharField(max_length=100, required=False, help_text="your id, for idempotency")

    def validate_value(self, value: float) -> float:
        if value != value or value in (float("inf"), float("-inf")):
            raise serializers.ValidationError("must be a finite number")
        return value


class EventBatchSerializer(serializers.Serializer):
    items = EventItemSerializer(many=True, allow_empty=False, max_length=MAX_ITEMS)


class RecordedSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    joined = serializers.IntegerField(required=False)
    stored = serializers.IntegerField(required=False)
    duplicates = serializers.IntegerField(required=False)
