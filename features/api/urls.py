from django.urls import path

from features.api import historical, views

urlpatterns = [
    path("entities/", views.EntityListCreate.as_view(), name="feature-entity-list"),
    path("views/", views.FeatureViewListCreate.as_view(), name="feature-view-list"),
    path("views/<slug:name>/", views.FeatureViewDetail.as_view(), name="feature-view-detail"),
    path("online", views.Online.as_view(), name="feature-online"),
    path("historical/", historical.Historical.as_view(), name="feature-historical"),
    path("<slug:name>/push", views.Push.as_view(), name="feature-push"),
]
