"""Registry REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import optimisation, refs, selectors, services
from registry.api import serializers as s
from registry.models import ModelAlias, ModelVersion, RegisteredModel


def _model(name: str) -> RegisteredModel:
    return get_object_or_404(RegisteredModel, name=name)


def _version(model: RegisteredModel, number: int) -> ModelVersion:
    try:
        return model.versions.get(version=number)
    except ModelVersion.DoesNotExist:
        raise ValidationError({"version": [f"{model.name} has no version {number}"]}) from None


class ModelListCreate(generics.ListAPIView):
    serializer_class = s.RegisteredModelSerializer

    def get_queryset(self):
        return selectors.registered_model_list()

    @extend_schema(request=s.RegisteredModelCreateSerializer, responses={201: s.RegisteredModelSerializer})
    def post(self, request: Request) -> Response:
        data = s.RegisteredModelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.registered_model_create(**data.validated_data, owner=request.user, actor=request.user)
        return Response(s.RegisteredModelSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetail(APIView):
    @extend_schema(responses=s.RegisteredModelSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(s.RegisteredModelSerializer(selectors.registered_model_get(name)).data)

    @extend_schema(request=s.RegisteredModelUpdateSerializer, responses=s.RegisteredModelSerializer)
    def patch(self, request: Request, name: str) -> Response:
        data = s.RegisteredModelUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        model = services.registered_model_update(model=_model(name), actor=request.user, **data.validated_data)
        return Response(s.RegisteredModelSerializer(selectors.registered_model_get(model.name)).data)


class VersionListCreate(generics.ListAPIView):
    serializer_class = s.ModelVersionSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return selectors.model_version_list(_model(self.kwargs["name"]))

    @extend_schema(request=s.VersionRegisterSerializer, responses={201: s.ModelVersionSerializer})
    def post(self, request: Request, name: str) -> Response:
        model = _model(name)
        data = s.VersionRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        artifact = fields.pop("artifact")
        evaluation = fields.pop("evaluation_data", None)
        version = services.model_version_register(
            model=model,
            artifact=artifact.read(),
            filename=artifact.name or "",
            fmt=fields.pop("format", None),
            evaluation_data=evaluation.read() if evaluation is not None else None,
            actor=request.user,
            **fields,
        )
        return Response(s.ModelVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class VersionDetail(APIView):
    @extend_schema(responses=s.ModelVersionSerializer)
    def get(self, request: Request, name: str, version: int) -> Response:
        model = _model(name)
        return Response(
            s.ModelVersionSerializer(get_object_or_404(selectors.model_version_list(model), version=version)).data
        )


class VersionArchive(APIView):
    @extend_schema(request=None, responses=s.ModelVersionSerializer)
    def post(self, request: Request, name: str, version: int) -> Response:
        model = _model(name)
        archived = services.model_version_archive(version=_version(model, version), actor=request.user)
        return Response(s.ModelVersionSerializer(archived).data)


class VersionOnnx(APIView):
    @extend_schema(request=None, responses={202: s.ModelVersionSerializer})
    def post(self, request: Request, name: str, version: int) -> Response:
        """Queue the version's ONNX conversion (parity, latencies, runtime choice) on a worker."""
        model = _model(name)
        pending = optimisation.model_version_request_onnx(version=_version(model, version), actor=request.user)
        return Response(s.ModelVersionSerializer(pending).data, status=status.HTTP_202_ACCEPTED)


class VersionRuntime(APIView):
    @extend_schema(request=s.RuntimeSerializer, responses=s.ModelVersionSerializer)
    def put(self, request: Request, name: str, version: int) -> Response:
        model = _model(name)
        data = s.RuntimeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changed = optimisation.model_version_set_runtime(
            version=_version(model, version), runtime=data.validated_data["runtime"], actor=request.user
        )
        return Response(s.ModelVersionSerializer(changed).data)


class VersionQuantize(APIView):
    @extend_schema(request=None, responses={201: s.ModelVersionSerializer})
    def post(self, request: Request, name: str, version: int) -> Response:
        """A new candidate version: this one's ONNX model dynamically quantised, through the gates."""
        model = _model(name)
        made = optimisation.model_version_quantize(version=_version(model, version), actor=request.user)
        return Response(s.ModelVersionSerializer(made).data, status=status.HTTP_201_CREATED)


class AliasListCreate(generics.ListAPIView):
    serializer_class = s.AliasSerializer
    pagination_class = None

    def get_queryset(self):
        return ModelAlias.objects.filter(model=_model(self.kwargs["name"])).select_related("version")

    @extend_schema(request=s.AliasCreateSerializer, responses={201: s.AliasSerializer})
    def post(self, request: Request, name: str) -> Response:
        model = _model(name)
        data = s.AliasCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        alias = services.alias_create(
            model=model,
            name=data.validated_data["alias"],
            version=refs.resolve(model, data.validated_data["version"]),
            actor=request.user,
        )
        return Response(s.AliasSerializer(alias).data, status=status.HTTP_201_CREATED)


class AliasDetail(APIView):
    @extend_schema(responses=s.AliasSerializer)
    def get(self, request: Request, name: str, alias: str) -> Response:
        found = get_object_or_404(ModelAlias.objects.select_related("version"), model__name=name, name=alias)
        return Response(s.AliasSerializer(found).data)

    @extend_schema(request=s.AliasMoveSerializer, responses=s.AliasSerializer)
    def put(self, request: Request, name: str, alias: str) -> Response:
        model = _model(name)
        data = s.AliasMoveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        moved = services.alias_move(
            model=model,
            name=alias,
            version=refs.resolve(model, data.validated_data["version"]),
            actor=request.user,
        )
        return Response(s.AliasSerializer(moved).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, name: str, alias: str) -> Response:
        services.alias_delete(model=_model(name), name=alias, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EventList(generics.ListAPIView):
    serializer_class = s.RegistryEventSerializer

    def get_queryset(self):
        return selectors.registry_event_list(_model(self.kwargs["name"]))
