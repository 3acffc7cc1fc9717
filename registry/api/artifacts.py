"""Artifact download: `GET /api/v1/models/{name}/versions/{n}/artifact/` answers the stored bytes, verified first.

The bytes go out only when they still hash to the sha256 recorded at registration (the registry's own integrity
check, which marks a version whose file changed, exactly as a load would). The client checks the hash again on its
side, against the header and against the version's recorded sha256 from the API.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import services
from registry.models import ArtifactFormat, ModelVersion

EXTENSIONS = {ArtifactFormat.SKOPS: "skops", ArtifactFormat.ONNX: "onnx", ArtifactFormat.JOBLIB: "joblib"}


class OctetStreamRenderer(renderers.BaseRenderer):
    """Lets a client ask for `Accept: application/octet-stream`; errors still go out as JSON text."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data if isinstance(data, bytes) else json.dumps(data).encode()


def _tampered(version: ModelVersion, why: str) -> Response:
    detail = f"{version.model.name} v{version.version}: {why}; the artifact was tampered with and is not served"
    return Response({"detail": detail}, status=409)


class VersionArtifact(APIView):
    renderer_classes = [renderers.JSONRenderer, OctetStreamRenderer]

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="the stored bytes"),
            409: OpenApiResponse(description="the stored bytes no longer match the recorded sha256"),
        }
    )
    def get(self, request: Request, name: str, version: int) -> HttpResponse | Response:
        found = get_object_or_404(ModelVersion.objects.select_related("model"), model__name=name, version=version)
        if found.integrity_failed_at is not None:
            return _tampered(found, f"its integrity check failed at {found.integrity_failed_at.isoformat()}")
        try:
            data = services.model_version_read_artifact(found)  # marks the version when the hash differs
        except services.ArtifactIntegrityError:
            return _tampered(found, "the stored bytes no longer hash to the registered sha256")
        except FileNotFoundError:
            services.model_version_verify_integrity(version=found)  # marks it: the file is gone
            return _tampered(found, "the stored file is missing")
        response = HttpResponse(data, content_type="application/octet-stream")
        response["X-Artifact-SHA256"] = found.sha256
        response["X-Artifact-Format"] = found.format
        response["Content-Length"] = str(len(data))
        filename = f"{found.model.name}-v{found.version}.{EXTENSIONS.get(found.format, found.format)}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
