from __future__ import annotations

from rest_framework import serializers

from registry.api.fields import VersionRefField
from rollouts import selectors
from rollouts.models import Rollout, RolloutEvent


class RolloutStartSerializer(serializers.Serializer):
    version = VersionRefField(required=False, help_text="the candidate: 3, models:/<name>/3 or models:/<name>@alias")
    candidate = VersionRefField(required=False, help_text="another name for version (as the answer spells it)")
    mode = serializers.ChoiceField(choices=Rollout.Mode.choices, default=Rollout.Mode.CANARY)
    stages = serializers.ListField(child=serializers.IntegerField(), required=False)
    stage_seconds = serializers.IntegerField(min_value=1, default=300)
    shadow_percent = serializers.FloatField(min_value=0, max_value=100, default=0)
    analysis = serializers.DictField(child=serializers.FloatField(), required=False)

    def validate(self, attrs: dict) -> dict:
        version, candidate = attrs.pop("version", None), attrs.pop("candidate", None)
        if version is None and candidate is None:
            raise serializers.ValidationError({"version": ["name the candidate version"]})
        if version is not None and candidate is not None and version != candidate:
            raise serializers.ValidationError({"candidate": ["give version or candidate, not two different ones"]})
        attrs["version"] = version if version is not None else candidate
        return attrs


class RollbackRequestSerializer(serializers.Serializer):
    version = VersionRefField(
        required=False, help_text="the version you expect to take out of traffic; refused (400) if another one would be"
    )


class RolloutEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RolloutEvent
        fields = ["created_at", "action", "stage_index", "message", "actor_name", "figures"]


class RolloutSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name")
    candidate = serializers.IntegerField(source="candidate.version")
    baseline = serializers.IntegerField(source="baseline.version")
    candidate_percent = serializers.FloatField()

    class Meta:
        model = Rollout
        fields = [
            "id", "model", "candidate", "baseline", "mode", "status", "stages", "stage_index", "stage_started_at",
            "stage_seconds", "stage_extensions", "candidate_percent", "shadow_percent", "analysis", "reason",
            "created_at", "finished_at",
        ]  # fmt: skip


class RolloutDetailSerializer(RolloutSerializer):
    events = RolloutEventSerializer(many=True)
    live = serializers.SerializerMethodField()

    class Meta(RolloutSerializer.Meta):
        fields = [*RolloutSerializer.Meta.fields, "live", "events"]

    def get_live(self, rollout: Rollout) -> dict:
        live = selectors.live_figures(rollout)
        live["stages"] = selectors.stage_figures(rollout)
        if rollout.shadow_percent > 0:
            live["shadow"] = selectors.shadow_comparison(rollout)
        return live


class RollbackSerializer(serializers.Serializer):
    taken_out = serializers.IntegerField()
    serving = serializers.IntegerField()
