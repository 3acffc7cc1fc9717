"""Subject rights over the API (admins only, config/access.py): erase or export everything held for one key.

POSTed, both: the key is personal data and stays out of URLs and access logs."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.subjects import KEY_LENGTH, subject_erase, subject_export


class SubjectSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=KEY_LENGTH, trim_whitespace=False, help_text="routing key or entity id")


class SubjectEraseSerializer(SubjectSerializer):
    dry_run = serializers.BooleanField(default=False, help_text="count what would be erased, delete nothing")


class SubjectErase(APIView):
    @extend_schema(
        request=SubjectEraseSerializer,
        responses={200: OpenApiResponse(description="the receipt: rows per store and table"),
                   503: OpenApiResponse(description="some stores failed (named in the receipt): erase again")},
    )  # fmt: skip
    def post(self, request: Request) -> Response:
        data = SubjectEraseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        receipt = subject_erase(**data.validated_data, actor=request.user, source="api", request=request)
        if receipt["failed"]:
            return Response(receipt, status=503, headers={"Retry-After": "5"})
        return Response(receipt)


class SubjectExport(APIView):
    @extend_schema(request=SubjectSerializer, responses={200: OpenApiResponse(description="every row held, by store")})
    def post(self, request: Request) -> Response:
        data = SubjectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(subject_export(**data.validated_data, actor=request.user, source="api", request=request))
