"""Rollout REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry import refs
from registry.models import RegisteredModel
from rollouts import services as rollouts
from rollouts.api import serializers as s
from rollouts.models import Rollout


def _model(name: str) -> RegisteredModel:
    return get_object_or_404(RegisteredModel, name=name)


def _rollouts():
    return Rollout.objects.select_related("model", "candidate", "baseline")


class RolloutListCreate(generics.ListAPIView):
    serializer_class = s.RolloutSerializer

    def get_queryset(self):
        return _rollouts().filter(model=_model(self.kwargs["name"]))

    @extend_schema(request=s.RolloutStartSerializer, responses={201: s.RolloutDetailSerializer})
    def post(self, request: Request, name: str) -> Response:
        model = _model(name)
        data = s.RolloutStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        candidate = refs.resolve(model, fields.pop("version"))
        rollout = rollouts.rollout_start(model=model, candidate=candidate, actor=request.user, **fields)
        return Response(s.RolloutDetailSerializer(_rollouts().get(pk=rollout.pk)).data, status=status.HTTP_201_CREATED)


class RolloutDetail(APIView):
    @extend_schema(responses=s.RolloutDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.RolloutDetailSerializer(get_object_or_404(_rollouts(), pk=pk)).data)


class RolloutControl(APIView):
    """POST /rollouts/{id}/pause|resume|promote|abort."""

    actions = {
        "pause": rollouts.rollout_pause,
        "resume": rollouts.rollout_resume,
        "promote": rollouts.rollout_promote,
        "abort": rollouts.rollout_abort,
    }

    @extend_schema(request=None, responses=s.RolloutDetailSerializer)
    def post(self, request: Request, pk: int, action: str) -> Response:
        rollout = get_object_or_404(_rollouts(), pk=pk)
        self.actions[action](rollout=rollout, actor=request.user)
        return Response(s.RolloutDetailSerializer(_rollouts().get(pk=pk)).data)


class ModelRollback(APIView):
    @extend_schema(request=s.RollbackRequestSerializer, responses=s.RollbackSerializer)
    def post(self, request: Request, name: str) -> Response:
        model = _model(name)
        data = s.RollbackRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ref = data.validated_data.get("version")
        expected = refs.resolve(model, ref) if ref is not None else None
        taken_out, serving_now = rollouts.model_rollback(model=model, actor=request.user, expected=expected)
        return Response(s.RollbackSerializer({"taken_out": taken_out.version, "serving": serving_now.version}).data)
