from django.urls import path

from serving.api import batch, views

urlpatterns = [
    path("api-keys/", views.ApiKeyListCreate.as_view(), name="api-key-list"),
    path("api-keys/<int:pk>/", views.ApiKeyDetail.as_view(), name="api-key-detail"),
    path("api-keys/<int:pk>/revoke/", views.ApiKeyRevoke.as_view(), name="api-key-revoke"),
    # batch scoring (README "Batch scoring")
    path("models/<slug:name>/batch-jobs/", batch.BatchJobListCreate.as_view(), name="batch-job-list"),
    path("batch-jobs/<int:pk>/", batch.BatchJobDetail.as_view(), name="batch-job-detail"),
    path("batch-jobs/<int:pk>/cancel/", batch.BatchJobCancel.as_view(), name="batch-job-cancel"),
]
