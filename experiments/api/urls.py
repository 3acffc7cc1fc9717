from django.urls import path

from experiments.api import views

urlpatterns = [
    path("experiments/", views.ExperimentListCreate.as_view(), name="experiment-list"),
    path("experiments/<slug:name>/", views.ExperimentDetail.as_view(), name="experiment-detail"),
    path("experiments/<slug:name>/start/", views.ExperimentStart.as_view(), name="experiment-start"),
    path("experiments/<slug:name>/stop/", views.ExperimentStop.as_view(), name="experiment-stop"),
    path("experiments/<slug:name>/weights/", views.ExperimentWeights.as_view(), name="experiment-weights"),
    path("experiments/<slug:name>/conclude/", views.ExperimentConclude.as_view(), name="experiment-conclude"),
    path("experiments/<slug:name>/results/", views.ExperimentResults.as_view(), name="experiment-results"),
    path("experiments/<slug:name>/events/", views.ExperimentEvents.as_view(), name="experiment-events"),
]
