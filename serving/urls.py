from django.urls import path, re_path

from serving import health, hotpath, mlflow, v2
from serving.api.predictions import prediction

# The prediction endpoints' paths, one pattern each, shared with the ASGI front's matcher (serving/front.py), which
# answers these requests before Django sees them: a change here changes both. Django's `slug` and `str` converters,
# spelt out as regular expressions (relative to the site root: config/urls.py includes this URLconf at ""). Each
# takes an optional trailing slash, as every API path does (config/forgiving_urls.py): no redirect, no second
# lookup. INVOCATIONS_PATTERN is MLflow's scoring path, for a named model or (no name) the deployment's default.
PREDICT_PATTERN = r"api/v1/models/(?P<name>[-a-zA-Z0-9_]+)/predict/?\Z"
INFER_PATTERN = r"v2/models/(?P<name>[-a-zA-Z0-9_]+)(?:/versions/(?P<version>[^/]+))?/infer/?\Z"
INVOCATIONS_PATTERN = r"(?:api/v1/models/(?P<name>[-a-zA-Z0-9_]+)/)?invocations/?\Z"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    re_path(rf"^{PREDICT_PATTERN}", hotpath.predict, name="predict"),
    path("api/v1/predictions/<str:prediction_id>", prediction, name="prediction"),  # an asynchronous one's answer
    re_path(rf"^{INVOCATIONS_PATTERN}", mlflow.invocations, name="invocations"),  # MLflow's scoring protocol
    path("v2", v2.server_metadata, name="v2-server"),
    path("v2/health/live", v2.server_live, name="v2-live"),
    path("v2/health/ready", v2.server_ready, name="v2-ready"),
    path("v2/models/<slug:name>", v2.model_metadata, name="v2-model"),
    path("v2/models/<slug:name>/ready", v2.model_ready, name="v2-model-ready"),
    re_path(rf"^{INFER_PATTERN}", v2.infer, name="v2-infer"),  # with or without /versions/<version>
    path("v2/models/<slug:name>/versions/<str:version>", v2.model_metadata, name="v2-model-version"),
    path("v2/models/<slug:name>/versions/<str:version>/ready", v2.model_ready, name="v2-model-version-ready"),
]
