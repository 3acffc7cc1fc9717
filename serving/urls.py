from django.urls import path

from serving import health, hotpath, v2

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/models/<slug:name>/predict", hotpath.predict, name="predict"),
    path("v2", v2.server_metadata, name="v2-server"),
    path("v2/health/live", v2.server_live, name="v2-live"),
    path("v2/health/ready", v2.server_ready, name="v2-ready"),
    path("v2/models/<slug:name>", v2.model_metadata, name="v2-model"),
    path("v2/models/<slug:name>/ready", v2.model_ready, name="v2-model-ready"),
    path("v2/models/<slug:name>/infer", v2.infer, name="v2-infer"),
    path("v2/models/<slug:name>/versions/<str:version>", v2.model_metadata, name="v2-model-version"),
    path("v2/models/<slug:name>/versions/<str:version>/ready", v2.model_ready, name="v2-model-version-ready"),
    path("v2/models/<slug:name>/versions/<str:version>/infer", v2.infer, name="v2-infer-version"),
]
