from django.urls import path

from monitoring.api import views

urlpatterns = [
    path("feedback", views.FeedbackCreate.as_view(), name="feedback"),
    path("events", views.EventCreate.as_view(), name="events"),
]
