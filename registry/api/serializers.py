from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from registry.api.fields import VersionRefField
from registry.models import ArtifactFormat, ModelAlias, ModelVersion, RegisteredModel, RegistryEvent, Runtime, Task


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    aliases = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    integrity_ok = serializers.SerializerMethodField()
    onnx = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model", "version", "status", "format", "sha256", "size_bytes", "signature", "metrics", "params",
            "tags", "lineage", "library_versions", "gate_report", "aliases", "integrity_ok", "runtime",
            "runtime_override", "onnx", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_integrity_ok(self, version: ModelVersion) -> bool:
        return version.integrity_failed_at is None

    def get_onnx(self, version: ModelVersion) -> dict | None:
        """The ONNX conversion: its report (status, parity, latencies, the runtime it chose) and its artifact."""
        if not version.onnx_conversion:
            return None
        return {**version.onnx_conversion, "sha256": version.onnx_sha256 or None, "size_bytes": version.onnx_size_bytes}


class RegisteredModelSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    aliases = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "name", "description", "task", "owner", "tags", "gate_rules", "protected_aliases", "convert_onnx",
            "aliases", "latest_version", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_aliases(self, model: RegisteredModel) -> dict[str, int]:
        return {alias.name: alias.version.version for alias in model.aliases.all()}

    def get_latest_version(self, model: RegisteredModel) -> int | None:
        versions = [v.version for v in model.versions.all()]
        return max(versions, default=None)


class RegisteredModelCreateSerializer(serializers.Serializer):
    name = serializers.SlugField(max_length=100)
    task = serializers.ChoiceField(choices=Task.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = serializers.DictField(required=False, default=dict)
    gate_rules = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    convert_onnx = serializers.BooleanField(required=False, default=False)


class RegisteredModelUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.DictField(required=False)
    gate_rules = serializers.ListField(child=serializers.CharField(), required=False)
    # changing which aliases need deploy needs deploy itself (registry/services.py)
    protected_aliases = serializers.ListField(child=serializers.CharField(), required=False)
    convert_onnx = serializers.BooleanField(required=False)


class VersionRegisterSerializer(serializers.Serializer):
    """Multipart registration: the artifact file plus JSON fields (sent as JSON strings in multipart)."""

    artifact = serializers.FileField(allow_empty_file=True)
    format = serializers.ChoiceField(choices=ArtifactFormat.choices, required=False)
    signature = serializers.JSONField(binary=True, required=False)
    metrics = serializers.JSONField(binary=True, required=False)
    params = serializers.JSONField(binary=True, required=False)
    tags = serializers.JSONField(binary=True, required=False)
    lineage = serializers.JSONField(binary=True, required=False)
    library_versions = serializers.JSONField(binary=True, required=False)
    evaluation_data = serializers.FileField(required=False, allow_empty_file=True)
    target_column = serializers.CharField(required=False, default="target")
    # convert to ONNX after registration (default: the model's convert_onnx)
    convert_onnx = serializers.BooleanField(required=False, allow_null=True, default=None)

    def validate_artifact(self, upload):
        limit_mb = settings.MODELWORKS_MAX_ARTIFACT_MB
        if upload.size > limit_mb * 1024 * 1024:
            raise serializers.ValidationError(f"the file is {upload.size} bytes; the limit is {limit_mb} MB")
        return upload


class AliasSerializer(serializers.ModelSerializer):
    alias = serializers.CharField(source="name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)

    class Meta:
        model = ModelAlias
        fields = ["alias", "version", "updated_at"]
        read_only_fields = fields


class AliasCreateSerializer(serializers.Serializer):
    alias = serializers.CharField(max_length=63)
    version = VersionRefField()


class AliasMoveSerializer(serializers.Serializer):
    version = VersionRefField()


class RegistryEventSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version", read_only=True, allow_null=True)

    class Meta:
        model = RegistryEvent
        fields = ["id", "action", "version", "actor_name", "before", "after", "message", "created_at"]
        read_only_fields = fields


class RuntimeSerializer(serializers.Serializer):
    runtime = serializers.ChoiceField(choices=[("", "measured"), *Runtime.choices], allow_blank=True)
