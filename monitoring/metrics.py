"""Monitoring metrics for Prometheus, read from the stored reports at scrape time.

Monitors run in Celery workers, which expose no metrics endpoint; gauges set there would never reach a scrape.
Reading the latest report per monitor from the database at scrape time is right whichever process ran it.
Labels stay bounded: model, version, feature (the signature's features), metric. Served at /metrics/monitoring.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from monitoring.models import Alert, DriftReport


def latest_reports() -> list[DriftReport]:
    latest = DriftReport.objects.values("monitor_id").annotate(last=Max("id")).values_list("last", flat=True)
    return list(DriftReport.objects.filter(id__in=list(latest)).order_by("model_name", "version"))


class MonitoringCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_version = ["model", "version"]
        share = GaugeMetricFamily(
            "modelworks_drift_dataset_share", "Share of features drifted in the latest report", labels=by_version
        )
        dataset = GaugeMetricFamily(
            "modelworks_drift_dataset_detected", "1 when the latest report found dataset drift", labels=by_version
        )
        detected = GaugeMetricFamily(
            "modelworks_drift_detected", "1 when the feature drifted in the latest report",
            labels=["model", "version", "feature"],
        )  # fmt: skip
        p_value = GaugeMetricFamily(
            "modelworks_drift_p_value", "The feature's (corrected) p-value in the latest report",
            labels=["model", "version", "feature"],
        )  # fmt: skip
        quality = GaugeMetricFamily(
            "modelworks_model_quality", "Quality from ground truth over the latest report's window",
            labels=["model", "version", "metric"],
        )  # fmt: skip
        for report in latest_reports():
            labels = [report.model_name, str(report.version)]
            if report.tested_features:
                share.add_metric(labels, report.drift_share)
                dataset.add_metric(labels, float(report.dataset_drift))
            for feature in report.features:
                if "p_adjusted" in feature:
                    detected.add_metric([*labels, feature["name"]], float(feature["drifted"]))
                    p_value.add_metric([*labels, feature["name"]], feature["p_adjusted"])
            for metric, value in report.quality.items():
                if metric not in ("task", "n", "requests_mismatched") and value is not None:
                    quality.add_metric([*labels, metric], value)
        alerts = GaugeMetricFamily("modelworks_monitoring_open_alerts", "Open monitoring alerts", labels=["kind"])
        for kind in ("dataset_drift", "quality"):
            alerts.add_metric([kind], Alert.objects.filter(kind=kind, resolved_at__isnull=True).count())
        yield from (share, dataset, detected, p_value, quality, alerts)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _process_group() -> list[int]:
    """This process, its parent when that is the gunicorn master, and the master's other workers (Linux /proc)."""
    parent = os.getppid()
    pids = {os.getpid()}
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as handle:
            if b"gunicorn" not in handle.read():
                return sorted(pids)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _stat(int(entry)) and int(_stat(int(entry))[1]) == parent:
                pids.add(int(entry))
    except OSError:
        pass
    return sorted(pids)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ... (utime is [11], stime [12])."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class ProcessCollector(Collector):
    """CPU seconds and resident memory of every web worker, each by pid (gunicorn's multiprocess mode drops the
    client library's own process metrics)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cpu = CounterMetricFamily("modelworks_process_cpu_seconds", "CPU time of the process", labels=["pid"])
        memory = GaugeMetricFamily("modelworks_process_resident_memory_bytes", "Resident memory", labels=["pid"])
        for pid in _process_group():
            fields = _stat(pid)
            if fields is None:
                continue
            cpu.add_metric([str(pid)], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
            memory.add_metric([str(pid)], int(fields[21]) * PAGE_SIZE)
        yield cpu
        yield memory
        yield from _gpu()


def _gpu() -> Iterator[GaugeMetricFamily]:
    """GPU utilisation when an NVIDIA GPU and the optional nvidia-ml-py package are present."""
    try:
        import pynvml  # optional dependency: pip install nvidia-ml-py
    except ImportError:
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return
    utilisation = GaugeMetricFamily("modelworks_gpu_utilisation_ratio", "GPU utilisation", labels=["gpu"])
    used = GaugeMetricFamily("modelworks_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        utilisation.add_metric([str(index)], pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
        used.add_metric([str(index)], pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    yield utilisation
    yield used


def monitoring_metrics(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitoringCollector())
    registry.register(ProcessCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
