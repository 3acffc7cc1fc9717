"""Monitoring REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from datetime import timedelta

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.queueing import TaskNotQueued, enqueue
from monitoring.api import serializers as s
from monitoring.models import Alert, AlertStatus, Monitor
from monitoring.selectors import quality_metrics
from monitoring.services import alerts, monitors, references
from monitoring.services.distillation import model_version_distill
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from monitoring.tasks import run_monitor
from registry.models import ModelVersion, RegisteredModel


def _items(request: Request) -> dict:
    """A batch is {"items": [...]}; a bare list or a single item object are accepted too."""
    data = request.data
    if isinstance(data, list):
        return {"items": data}
    if isinstance(data, dict) and "items" not in data:
        return {"items": [data]}
    return data


class FeedbackCreate(APIView):
    @extend_schema(request=s.FeedbackBatchSerializer, responses={202: s.RecordedSerializer})
    def post(self, request: Request) -> Response:
        data = s.FeedbackBatchSerializer(data=_items(request))
        data.is_valid(raise_exception=True)
        items = [FeedbackItem(**item) for item in data.validated_data["items"]]
        return Response(feedback_record(items=items), status=status.HTTP_202_ACCEPTED)


class EventCreate(APIView):
    @extend_schema(request=s.EventBatchSerializer, responses={202: s.RecordedSerializer})
    def post(self, request: Request) -> Response:
        data = s.EventBatchSerializer(data=_items(request))
        data.is_valid(raise_exception=True)
        items = [EventItem(**item) for item in data.validated_data["items"]]
        return Response(business_events_record(items=items), status=status.HTTP_202_ACCEPTED)


def _version(name: str, number: int) -> ModelVersion:
    return get_object_or_404(ModelVersion.objects.select_related("model"), model__name=name, version=number)


class MonitorListCreate(generics.ListAPIView):
    serializer_class = s.MonitorSerializer
    queryset = Monitor.objects.select_related("model").order_by("id")

    @extend_schema(request=s.MonitorCreateSerializer, responses={201: s.MonitorCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = s.MonitorCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        model = get_object_or_404(RegisteredModel, name=fields.pop("model"))
        monitor = monitors.monitor_create(model=model, **fields)
        created = s.MonitorCreatedSerializer(monitor, context={"request": request})
        return Response(created.data, status=status.HTTP_201_CREATED)


class MonitorDetail(generics.RetrieveAPIView):
    serializer_class = s.MonitorSerializer
    queryset = Monitor.objects.select_related("model")


class MonitorRun(APIView):
    @extend_schema(request=s.MonitorRunSerializer, responses={201: s.DriftReportSerializer, 202: None})
    def post(self, request: Request, pk: int) -> Response:
        monitor = get_object_or_404(Monitor.objects.select_related("model"), pk=pk)
        data = s.MonitorRunSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["wait"]:
            report = monitors.monitor_run(monitor=monitor)
            return Response(s.DriftReportSerializer(report).data, status=status.HTTP_201_CREATED)
        try:
            result = enqueue(run_monitor, monitor.pk)
        except TaskNotQueued as exc:  # the broker is hung or down: say so within a bounded wait, never a 500
            detail, retry_after = f"{exc}; retry, or run with wait=true", str(exc.retry_after)
            return Response({"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": retry_after})  # fmt: skip
        return Response({"queued": True, "task_id": result.id}, status=status.HTTP_202_ACCEPTED)


class MonitorReports(generics.ListAPIView):
    serializer_class = s.DriftReportSerializer

    def get_queryset(self):
        monitor = get_object_or_404(Monitor, pk=self.kwargs["pk"])
        return monitor.reports.order_by("-created_at", "-id")


def _alerts():
    return Alert.objects.select_related("monitor__model", "acknowledged_by").order_by("-opened_at", "-id")


class MonitorAlerts(generics.ListAPIView):
    """A monitor's alerts, newest first, each with the version it belongs to (and why it was resolved)."""

    serializer_class = s.AlertSerializer

    def get_queryset(self):
        monitor = get_object_or_404(Monitor, pk=self.kwargs["pk"])
        return _alerts().filter(monitor=monitor)


_STATUS = {
    AlertStatus.OPEN: {"resolved_at__isnull": True, "acknowledged_at__isnull": True},
    AlertStatus.ACKNOWLEDGED: {"resolved_at__isnull": True, "acknowledged_at__isnull": False},
    AlertStatus.RESOLVED: {"resolved_at__isnull": False},
}


class AlertList(generics.ListAPIView):
    """Every monitor's alerts, newest first; ?status=open|acknowledged|resolved&model=NAME&monitor=ID&version=N."""

    serializer_class = s.AlertSerializer

    def get_queryset(self):
        query = s.AlertQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        found = _alerts().filter(**_STATUS.get(filters.get("status"), {}))
        if "model" in filters:
            found = found.filter(monitor__model__name=filters["model"])
        if "monitor" in filters:
            found = found.filter(monitor_id=filters["monitor"])
        if "version" in filters:
            found = found.filter(version=filters["version"])
        return found

    @extend_schema(parameters=[s.AlertQuerySerializer])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class AlertDetail(generics.RetrieveAPIView):
    serializer_class = s.AlertSerializer
    queryset = _alerts()


class AlertChange(APIView):
    """POST /alerts/{id}/acknowledge|resolve {"note"?}: 409 when the alert's state does not allow it."""

    actions = {"acknowledge": alerts.alert_acknowledge, "resolve": alerts.alert_resolve}

    @extend_schema(request=s.AlertNoteSerializer, responses={200: s.AlertSerializer, 409: None})
    def post(self, request: Request, pk: int, action: str) -> Response:
        alert = get_object_or_404(Alert, pk=pk)
        data = s.AlertNoteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            self.actions[action](alert=alert, actor=request.user, **data.validated_data)
        except alerts.AlertStateConflict as exc:
            return Response({"detail": exc.message}, status=status.HTTP_409_CONFLICT)
        return Response(s.AlertSerializer(_alerts().get(pk=pk)).data)


class AlertSilence(APIView):
    """POST /alerts/{id}/silence {"period": "1h"|"1d"|"7d"|"0"}: no webhook for it until then; 409 when resolved."""

    @extend_schema(request=s.AlertSilenceSerializer, responses={200: s.AlertSerializer, 409: None})
    def post(self, request: Request, pk: int) -> Response:
        alert = get_object_or_404(Alert, pk=pk)
        data = s.AlertSilenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        period = data.validated_data["period"]
        try:
            alerts.alert_silence(alert=alert, period=timedelta(0) if period == "0" else period, actor=request.user)
        except alerts.AlertStateConflict as exc:
            return Response({"detail": exc.message}, status=status.HTTP_409_CONFLICT)
        return Response(s.AlertSerializer(_alerts().get(pk=pk)).data)


class VersionReference(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(request=s.ReferenceSerializer, responses={201: s.ReferenceDatasetSerializer})
    def post(self, request: Request, name: str, version: int) -> Response:
        target = _version(name, version)
        data = s.ReferenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        if "data" in fields:
            dataset = references.reference_dataset_upload(version=target, data=fields["data"].read())
        else:
            dataset = references.reference_dataset_from_traffic(
                version=target, since=fields["since"], until=fields["until"]
            )
        return Response(s.ReferenceDatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class VersionDistill(APIView):
    """A student trained on this version's answers, registered as the model's next version (README: Distillation)."""

    @extend_schema(request=s.DistillSerializer, responses={201: dict})
    def post(self, request: Request, name: str, version: int) -> Response:
        from registry.api.serializers import ModelVersionSerializer

        teacher = _version(name, version)
        data = s.DistillSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        student = model_version_distill(teacher=teacher, actor=request.user, **data.validated_data)
        return Response(ModelVersionSerializer(student).data, status=status.HTTP_201_CREATED)


class VersionQuality(APIView):
    @extend_schema(parameters=[s.QualityQuerySerializer], responses={200: dict})
    def get(self, request: Request, name: str, version: int) -> Response:
        target = _version(name, version)
        query = s.QualityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(quality_metrics(target.model.name, target.version, **query.validated_data))
