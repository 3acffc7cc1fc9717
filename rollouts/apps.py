from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "rollouts"
    # seed_demo asks each app for its demo (the registry imports no app above it), in demo_order.
    demo, demo_order = "rollouts.demo.seed_rollout", 10  # a canary of a retrained diabetes-ridge
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from registry import traffic as registry_traffic
        from registry.webhooks import events as webhook_events
        from rollouts.services import WEBHOOK_EVENTS, active_rollout_owner, split_for_model
        from serving import traffic

        traffic.register_split_source(split_for_model)
        registry_traffic.register_owner_check(active_rollout_owner)
        webhook_events.register_event_types(WEBHOOK_EVENTS)
