from django.urls import path

from registry.api import artifacts, audit, subjects, views, webhooks

urlpatterns = [
    path("models/", views.ModelListCreate.as_view(), name="model-list"),
    path("models/<slug:name>/", views.ModelDetail.as_view(), name="model-detail"),
    path("models/<slug:name>/versions/", views.VersionListCreate.as_view(), name="version-list"),
    path("models/<slug:name>/versions/<int:version>/", views.VersionDetail.as_view(), name="version-detail"),
    path(
        "models/<slug:name>/versions/<int:version>/archive/",
        views.VersionArchive.as_view(),
        name="version-archive",
    ),
    path("models/<slug:name>/versions/<int:version>/onnx/", views.VersionOnnx.as_view(), name="version-onnx"),
    path("models/<slug:name>/versions/<int:version>/runtime/", views.VersionRuntime.as_view(), name="version-runtime"),
    path(
        "models/<slug:name>/versions/<int:version>/quantize/", views.VersionQuantize.as_view(), name="version-quantize"
    ),
    path("models/<slug:name>/versions/<int:version>/artifact/", artifacts.VersionArtifact.as_view(), name="artifact"),
    path("models/<slug:name>/aliases/", views.AliasListCreate.as_view(), name="alias-list"),
    path("models/<slug:name>/aliases/<str:alias>/", views.AliasDetail.as_view(), name="alias-detail"),
    path("models/<slug:name>/events/", views.EventList.as_view(), name="event-list"),
    path("webhooks/", webhooks.WebhookListCreate.as_view(), name="webhook-list"),
    path("webhooks/<int:pk>/", webhooks.WebhookDetail.as_view(), name="webhook-detail"),
    path("webhooks/<int:pk>/deliveries/", webhooks.WebhookDeliveries.as_view(), name="webhook-deliveries"),
    # subject rights (GDPR): erase or export everything held for a routing key / entity id
    path("subjects/erase/", subjects.SubjectErase.as_view(), name="subject-erase"),
    path("subjects/export/", subjects.SubjectExport.as_view(), name="subject-export"),
    path("audit/", audit.AuditList.as_view(), name="audit-list"),
]
