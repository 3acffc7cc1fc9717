from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.scrape import scrape_only
from monitoring.metrics import monitoring_metrics
from serving.api.views import ObtainToken

urlpatterns = [
    path("", include("serving.urls")),
    path("api/v1/features/", include("features.api.urls")),  # feature store (issue 5)
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", ObtainToken.as_view(), name="api-token"),
    path("api/v1/", include("registry.api.urls")),
    path("api/v1/", include("rollouts.api.urls")),  # rollouts
    path("api/v1/", include("monitoring.api.urls")),  # monitoring
    path("api/v1/", include("experiments.api.urls")),  # experiments
    path("api/v1/", include("serving.api.urls")),  # API keys (staff only)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs page is for people in a browser: send them to the admin login rather than a bare 403. The split view
    # serves Swagger UI's start-up code as a script file, so the page runs under the CSP (config/security_headers.py).
    path("api/docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="api-docs"),
    # Prometheus endpoints: the scrape token or an allowed network (config/scrape.py)
    path("metrics/monitoring", scrape_only(monitoring_metrics), name="monitoring-metrics"),  # monitoring
    path("metrics", scrape_only(ExportToDjangoView), name="prometheus-django-metrics"),
]
