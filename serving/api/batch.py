"""Batch jobs over REST: start one on a model, follow its progress, cancel it (scope: predict on the model)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.models import RegisteredModel
from serving import batch
from serving.batch_models import BatchJob, InputFormat, JobStatus


class BatchJobSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    input = serializers.CharField(source="input_uri", read_only=True)
    output = serializers.CharField(source="output_uri", read_only=True)
    manifest = serializers.CharField(source="manifest_uri", read_only=True)
    progress = serializers.SerializerMethodField(help_text="rows done/total, rows per second, seconds left")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = BatchJob
        fields = [
            "id", "model", "version", "version_ref", "input", "input_format", "output", "manifest", "passthrough",
            "chunk_rows", "parallelism", "max_reject_share", "status", "error", "progress", "schedule", "created_by",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_progress(self, job: BatchJob) -> dict:
        return job.progress()


class BatchJobCreateSerializer(serializers.Serializer):
    input = serializers.CharField(max_length=1000, help_text="a path, artifacts:..., s3://bucket/key or az://...")
    output = serializers.CharField(max_length=1000, help_text="where the parts and the manifest go (a prefix)")
    version = serializers.JSONField(required=False, help_text="a version number or models:/<name>@<alias>")
    input_format = serializers.ChoiceField(choices=InputFormat.choices, required=False)
    passthrough = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
    chunk_rows = serializers.IntegerField(required=False, min_value=1, max_value=10_000_000)
    parallelism = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    max_reject_share = serializers.FloatField(required=False, min_value=0, max_value=1)


def _model(name: str) -> RegisteredModel:
    return get_object_or_404(RegisteredModel, name=name)


class BatchJobListCreate(generics.ListAPIView):
    serializer_class = BatchJobSerializer

    def get_queryset(self):
        jobs = BatchJob.objects.filter(model=_model(self.kwargs["name"])).select_related(
            "model", "version", "created_by"
        )
        wanted = self.request.query_params.get("status")
        if wanted is not None:
            if wanted not in JobStatus.values:
                raise serializers.ValidationError({"status": [f"one of {', '.join(JobStatus.values)}"]})
            jobs = jobs.filter(status=wanted)
        return jobs

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=JobStatus.values)])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=BatchJobCreateSerializer, responses={201: BatchJobSerializer})
    def post(self, request: Request, name: str) -> Response:
        data = BatchJobCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        job = batch.batch_job_create(
            model=_model(name), input_uri=given["input"], output_uri=given["output"], version_ref=given.get("version"),
            input_format=given.get("input_format"), passthrough=given.get("passthrough"),
            chunk_rows=given.get("chunk_rows"), parallelism=given.get("parallelism"),
            max_reject_share=given.get("max_reject_share"), actor=request.user,
        )  # fmt: skip
        answer = Response(BatchJobSerializer(job).data, status=status.HTTP_201_CREATED)
        answer["Location"] = f"/api/v1/batch-jobs/{job.pk}/"
        return answer


class BatchJobDetail(generics.RetrieveAPIView):
    serializer_class = BatchJobSerializer
    queryset = BatchJob.objects.select_related("model", "version", "created_by")


class BatchJobCancel(APIView):
    @extend_schema(request=None, responses={200: BatchJobSerializer, 400: None})
    def post(self, request: Request, pk: int) -> Response:
        job = get_object_or_404(BatchJob, pk=pk)
        batch.batch_job_cancel(job=job, actor=request.user)
        return Response(BatchJobSerializer(BatchJobDetail.queryset.get(pk=pk)).data)
