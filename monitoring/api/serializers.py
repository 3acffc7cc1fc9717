from __future__ import annotations

from rest_framework import serializers

from registry import permissions
from registry.api.fields import VersionRefField
from registry.webhooks.targets import mask_url

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
    stored = serializers.IntegerField(required=False)
    duplicates = serializers.IntegerField(required=False)


class MonitorSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    webhook_url = serializers.SerializerMethodField(
        help_text="whole to those holding write on the model (or admin); otherwise masked: https://host/…"
    )

    def get_webhook_url(self, monitor) -> str:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if permissions.holds(user, permissions.WRITE, monitor.model) or permissions.holds(user, permissions.ADMIN):
            return monitor.webhook_url
        return mask_url(monitor.webhook_url)

    class Meta:
        from monitoring.models import Monitor

        model = Monitor
        fields = [
            "id", "model", "name", "version", "enabled", "window_hours", "window_rows", "max_rows", "min_rows",
            "every_minutes", "p_threshold", "correction", "dataset_drift_share", "min_wasserstein", "min_psi",
            "quality_thresholds", "webhook_url", "last_run_at", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class MonitorCreatedSerializer(MonitorSerializer):
    webhook_secret = serializers.CharField(
        read_only=True,
        help_text="signs the alert webhooks (Standard Webhooks): shown in this answer only, store it now",
    )

    class Meta(MonitorSerializer.Meta):
        fields = [*MonitorSerializer.Meta.fields, "webhook_secret"]
        read_only_fields = fields


class MonitorCreateSerializer(serializers.Serializer):
    model = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=100)
    version = VersionRefField(
        required=False, allow_null=True,
        help_text="pin: 3, models:/NAME/3 or models:/NAME@alias (resolved now); empty: follow production",
    )  # fmt: skip
    enabled = serializers.BooleanField(required=False)
    window_hours = serializers.IntegerField(min_value=1, required=False)
    window_rows = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    max_rows = serializers.IntegerField(min_value=100, max_value=5_000_000, required=False)
    min_rows = serializers.IntegerField(min_value=1, required=False)
    every_minutes = serializers.IntegerField(min_value=1, required=False)
    p_threshold = serializers.FloatField(min_value=0, max_value=1, required=False)
    correction = serializers.ChoiceField(choices=["none", "bonferroni", "bh"], required=False)
    dataset_drift_share = serializers.FloatField(min_value=0, max_value=1, required=False)
    min_wasserstein = serializers.FloatField(min_value=0, required=False, allow_null=True)
    min_psi = serializers.FloatField(min_value=0, required=False, allow_null=True)
    quality_thresholds = serializers.DictField(child=serializers.FloatField(), required=False)
    webhook_url = serializers.URLField(required=False, allow_blank=True)


class DriftReportSerializer(serializers.ModelSerializer):
    watching = serializers.CharField(read_only=True, help_text='e.g. "watching v4: the production version at run time"')

    class Meta:
        from monitoring.models import DriftReport

        model = DriftReport
        fields = [
            "id", "monitor", "model_name", "version", "watched_as", "watching", "reference_rows", "current_rows",
            "window_start", "window_end", "tested_features", "drifted_features", "drift_share", "dataset_drift",
            "features", "quality", "note", "duration_ms", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="monitor.model.name", read_only=True)
    # A plain string in the schema: another enum named "status" makes drf-spectacular warn.
    status = serializers.CharField(read_only=True, help_text="open, acknowledged or resolved")
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        from monitoring.models import Alert

        model = Alert
        fields = [
            "id", "monitor", "model", "version", "kind", "subject", "status", "message", "details", "opened_at",
            "acknowledged_at", "acknowledged_by", "acknowledgement", "resolved_at", "resolution", "last_report",
            "webhook_status", "silenced_until",
        ]  # fmt: skip
        read_only_fields = fields


class AlertQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["open", "acknowledged", "resolved"], required=False)
    model = serializers.SlugField(max_length=100, required=False)
    monitor = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False)


class AlertNoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)


class AlertSilenceSerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=["1h", "1d", "7d", "0"], help_text='"0" lifts the silence')


class MonitorRunSerializer(serializers.Serializer):
    wait = serializers.BooleanField(default=False, help_text="run in this request and answer the report")


class ReferenceSerializer(serializers.Serializer):
    data = serializers.FileField(required=False, help_text="CSV with the signature's features")
    since = serializers.DateTimeField(required=False, help_text="or: a window of production traffic")
    until = serializers.DateTimeField(required=False)

    def validate(self, attrs):
        if "data" not in attrs and not ("since" in attrs and "until" in attrs):
            raise serializers.ValidationError({"data": ["upload a CSV, or give since and until for a traffic window"]})
        return attrs


class ReferenceDatasetSerializer(serializers.Serializer):
    source = serializers.CharField()
    rows = serializers.IntegerField()
    columns = serializers.ListField(child=serializers.CharField())
    window_start = serializers.DateTimeField(allow_null=True)
    window_end = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class QualityQuerySerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class DistillSerializer(serializers.Serializer):
    student = serializers.CharField(max_length=20, help_text="logistic | tree | forest:N")
    augment_rows = serializers.IntegerField(default=0, min_value=0, max_value=100_000,
                                            help_text="rows sampled within the signature's ranges")  # fmt: skip
    target_column = serializers.CharField(
        required=False, max_length=200, help_text="default: the evaluation sample's one column that is not a feature"
    )
    seed = serializers.IntegerField(default=0, min_value=0, max_value=2**31 - 1)
