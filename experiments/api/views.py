"""Experiments REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import selectors, services
from experiments.api import serializers as s
from experiments.models import Experiment, ExperimentEvent
from registry.models import RegisteredModel


def _experiment(name: str) -> Experiment:
    return get_object_or_404(selectors.experiment_list(), name=name)


def _answer(experiment: Experiment, code: int = status.HTTP_200_OK) -> Response:
    return Response(s.ExperimentSerializer(selectors.experiment_get(experiment.name)).data, status=code)


class ExperimentListCreate(generics.ListAPIView):
    serializer_class = s.ExperimentSerializer

    def get_queryset(self):
        experiments = selectors.experiment_list()
        model = self.request.query_params.get("model")
        return experiments.filter(model__name=model) if model else experiments

    @extend_schema(request=s.ExperimentCreateSerializer, responses={201: s.ExperimentSerializer})
    def post(self, request: Request) -> Response:
        data = s.ExperimentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        model = RegisteredModel.objects.filter(name=fields.pop("model")).first()
        if model is None:
            return Response({"model": [f"no model named '{data.validated_data['model']}'"]}, status=400)
        start = fields.pop("start")
        fields["arms"] = [dict(arm) for arm in fields["arms"]]
        with transaction.atomic():  # created and started together, or neither
            experiment = services.experiment_create(model=model, actor=request.user, **fields)
            if start:
                experiment = services.experiment_start(experiment=experiment, actor=request.user)
        return _answer(experiment, status.HTTP_201_CREATED)


class ExperimentDetail(APIView):
    @extend_schema(responses=s.ExperimentSerializer)
    def get(self, request: Request, name: str) -> Response:
        return _answer(_experiment(name))


class ExperimentStart(APIView):
    @extend_schema(request=None, responses=s.ExperimentSerializer)
    def post(self, request: Request, name: str) -> Response:
        return _answer(services.experiment_start(experiment=_experiment(name), actor=request.user))


class ExperimentStop(APIView):
    @extend_schema(request=None, responses=s.ExperimentSerializer)
    def post(self, request: Request, name: str) -> Response:
        return _answer(services.experiment_stop(experiment=_experiment(name), actor=request.user))


class ExperimentWeights(APIView):
    @extend_schema(request=s.WeightsSerializer, responses=s.ExperimentSerializer)
    def post(self, request: Request, name: str) -> Response:
        data = s.WeightsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        weights = dict(data.validated_data["weights"])
        return _answer(
            services.experiment_set_weights(experiment=_experiment(name), weights=weights, actor=request.user)
        )


class ExperimentConclude(APIView):
    @extend_schema(request=s.ConcludeSerializer, responses=s.ExperimentSerializer)
    def post(self, request: Request, name: str) -> Response:
        data = s.ConcludeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        concluded = services.experiment_conclude(
            experiment=_experiment(name), actor=request.user, **data.validated_data
        )
        return _answer(concluded)


class ExperimentResults(APIView):
    @extend_schema(
        responses=OpenApiTypes.OBJECT,
        parameters=[
            OpenApiParameter(
                "period", str, enum=list(selectors.PERIODS),
                description="since_weight_change (default): keys first exposed since the last weight change; all: "
                "every exposure, mixing the allocations of before and after each change",
            )
        ],
    )  # fmt: skip
    def get(self, request: Request, name: str) -> Response:
        period = selectors.results_period(request.query_params.get("period"))
        return Response(selectors.experiment_results(_experiment(name), period))


class ExperimentEvents(generics.ListAPIView):
    serializer_class = s.ExperimentEventSerializer

    def get_queryset(self):
        return ExperimentEvent.objects.filter(experiment=_experiment(self.kwargs["name"]))
