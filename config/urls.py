from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.auth_token import obtain_auth_token
from monitoring.metrics import monitoring_metrics

urlpatterns = [
    path("", include("serving.urls")),
    path("api/v1/features/", include("features.api.urls")),  # feature store (issue 5)
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("api/v1/", include("registry.api.urls")),
    path("api/v1/", include("rollouts.api.urls")),  # rollouts
    path("api/v1/", include("monitoring.api.urls")),  # monitoring
    path("api/v1/", include("experiments.api.urls")),  # experiments
    path("api/v1/", include("serving.api.urls")),  # API keys (staff only)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs page is for people in a browser: send them to the admin login rather than a bare 403.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="api-docs"),
    path("metrics/monitoring", monitoring_metrics, name="monitoring-metrics"),  # monitoring
    path("", include("django_prometheus.urls")),
]
