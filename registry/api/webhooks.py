"""Webhook endpoints over REST (admins only: config/access.py): the secret is in the create answer only."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from registry.models import RegisteredModel, WebhookDelivery, WebhookEndpoint
from registry.webhooks import services as webhooks


class WebhookEndpointSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "event_types", "model", "description", "active", "created_by", "created_at"]
        read_only_fields = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_...: shown in this answer only, store it now")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(serializers.Serializer):
    # The target and the event types are checked by the service, which answers per field.
    url = serializers.CharField(max_length=2000)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=50), help_text="e.g. version.validated, alias.moved, rollout.promoted"
    )
    model = serializers.SlugField(max_length=100, required=False, allow_null=True, help_text="empty: every model")
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    active = serializers.BooleanField(required=False, default=True)

    def validate_model(self, name: str | None) -> RegisteredModel | None:
        if name is None:
            return None
        model = RegisteredModel.objects.filter(name=name).first()
        if model is None:
            raise serializers.ValidationError(f"no registered model named '{name}'")
        return model


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "message_id", "event_type", "status", "attempts", "outcome", "payload", "created_at",
                  "finished_at"]  # fmt: skip
        read_only_fields = fields


def _endpoints():
    return WebhookEndpoint.objects.select_related("model", "created_by")


class WebhookListCreate(generics.ListAPIView):
    """Endpoints hearing registry and rollout events; POST makes one (its secret shown in the answer only)."""

    serializer_class = WebhookEndpointSerializer
    queryset = _endpoints()

    @extend_schema(request=WebhookEndpointCreateSerializer, responses={201: WebhookEndpointCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = WebhookEndpointCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(**data.validated_data, actor=request.user)
        return Response(WebhookEndpointCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetail(generics.RetrieveDestroyAPIView):
    serializer_class = WebhookEndpointSerializer
    queryset = _endpoints()

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        webhooks.webhook_endpoint_delete(endpoint=instance, actor=self.request.user)


class WebhookDeliveries(generics.ListAPIView):
    """An endpoint's deliveries, newest first: what was sent, how many attempts, what the receiver answered."""

    serializer_class = WebhookDeliverySerializer

    def get_queryset(self):
        return get_object_or_404(WebhookEndpoint, pk=self.kwargs["pk"]).deliveries.order_by("-created_at", "-id")
