from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from registry import traffic as registry_traffic
        from rollouts.services import active_rollout_owner, split_for_model
        from serving import traffic

        traffic.register_split_source(split_for_model)
        registry_traffic.register_owner_check(active_rollout_owner)
