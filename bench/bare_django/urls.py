from django.urls import path

from bench.bare_django import views

urlpatterns = [
    path("predict", views.predict),
    path("healthz", views.healthz),
]
