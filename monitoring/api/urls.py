from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("feedback", views.FeedbackCreate.as_view(), name="feedback"),
    path("events", views.EventCreate.as_view(), name="events"),
    path("monitors", views.MonitorListCreate.as_view(), name="monitor-list"),
    path("monitors/<int:pk>", views.MonitorDetail.as_view(), name="monitor-detail"),
    path("monitors/<int:pk>/run", views.MonitorRun.as_view(), name="monitor-run"),
    path("monitors/<int:pk>/reports", views.MonitorReports.as_view(), name="monitor-reports"),
    path("monitors/<int:pk>/alerts", views.MonitorAlerts.as_view(), name="monitor-alerts"),
    path("alerts/", views.AlertList.as_view(), name="alert-list"),
    path("alerts/<int:pk>/", views.AlertDetail.as_view(), name="alert-detail"),
    *(
        path(f"alerts/<int:pk>/{action}/", views.AlertChange.as_view(), {"action": action}, name=f"alert-{action}")
        for action in views.AlertChange.actions
    ),
    path("alerts/<int:pk>/silence/", views.AlertSilence.as_view(), name="alert-silence"),
    path("models/<slug:name>/versions/<int:version>/reference", views.VersionReference.as_view(), name="reference"),
    path("models/<slug:name>/versions/<int:version>/distill", views.VersionDistill.as_view(), name="distill"),
    path("models/<slug:name>/versions/<int:version>/quality", views.VersionQuality.as_view(), name="quality"),
]
