from django.urls import path

from rollouts.api import views

control = views.RolloutControl.as_view()

urlpatterns = [
    path("models/<slug:name>/rollouts/", views.RolloutListCreate.as_view(), name="rollout-list"),
    path("models/<slug:name>/rollback/", views.ModelRollback.as_view(), name="model-rollback"),
    path("rollouts/<int:pk>/", views.RolloutDetail.as_view(), name="rollout-detail"),
    *(
        path(f"rollouts/<int:pk>/{action}/", control, {"action": action}, name=f"rollout-{action}")
        for action in views.RolloutControl.actions
    ),
]
