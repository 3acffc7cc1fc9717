from __future__ import annotations

from rest_framework import serializers

from experiments.models import Experiment, ExperimentArm, ExperimentEvent
from experiments.services import Promotion
from registry.api.fields import VersionRefField


class ArmSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version", read_only=True)
    control = serializers.BooleanField(source="is_control", read_only=True)

    class Meta:
        model = ExperimentArm
        fields = ["name", "version", "weight", "ranges", "control"]
        read_only_fields = fields


class ExperimentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    # A plain string in the schema: a second enum named "status" (rollouts, versions) makes drf-spectacular warn.
    status = serializers.CharField(read_only=True, help_text="draft, running, stopped or concluded")
    arms = ArmSerializer(many=True, read_only=True)
    winner = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "name", "model", "description", "status", "salt", "arms", "primary_metric", "guardrail_metrics",
            "minimum_sample_size", "minimum_detectable_effect", "power", "alpha", "keyless_to_control", "winner",
            "created_by", "created_at", "started_at", "stopped_at", "concluded_at", "allocation_changed_at",
        ]  # fmt: skip
        read_only_fields = fields


class ArmInputSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=50)
    version = VersionRefField()
    weight = serializers.IntegerField(min_value=1)


class ExperimentCreateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100)
    model = serializers.SlugField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    arms = ArmInputSerializer(many=True, help_text="two or more; the first is the control")
    primary_metric = serializers.JSONField(
        help_text='"conversion:purchase", "mean_value:order", "quality", or {"kind": "conversion", "event": "purchase"}'
    )
    guardrail_metrics = serializers.JSONField(required=False, default=list, help_text="a list of metrics, either form")
    salt = serializers.CharField(required=False, max_length=100)
    minimum_sample_size = serializers.IntegerField(required=False, min_value=1, default=100)
    minimum_detectable_effect = serializers.FloatField(required=False, default=0.05)
    power = serializers.FloatField(required=False, default=0.8)
    alpha = serializers.FloatField(required=False, default=0.05)
    keyless_to_control = serializers.BooleanField(required=False, default=True)
    start = serializers.BooleanField(required=False, default=False, help_text="start it right away")


class WeightsSerializer(serializers.Serializer):
    weights = serializers.DictField(child=serializers.IntegerField(min_value=0), help_text='{"control": 80, ...}')


class ConcludeSerializer(serializers.Serializer):
    winner = serializers.SlugField(max_length=50)
    promote = serializers.ChoiceField(choices=Promotion.choices, default=Promotion.DIRECT)
    message = serializers.CharField(required=False, allow_blank=True, default="")


class ExperimentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExperimentEvent
        fields = ["id", "action", "actor_name", "before", "after", "message", "created_at"]
        read_only_fields = fields
