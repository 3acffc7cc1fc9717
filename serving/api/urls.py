from django.urls import path

from serving.api import views

urlpatterns = [
    path("api-keys/", views.ApiKeyListCreate.as_view(), name="api-key-list"),
    path("api-keys/<int:pk>/", views.ApiKeyDetail.as_view(), name="api-key-detail"),
    path("api-keys/<int:pk>/revoke/", views.ApiKeyRevoke.as_view(), name="api-key-revoke"),
]
