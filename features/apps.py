from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class FeaturesConfig(AppConfig):
    name = "features"
    demo, demo_order = "features.demo.seed_features_demo", 40  # a feature view, its rows, a model served by patient id
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from features.serving import resolve_feature_inputs
        from serving.inputs import register_input_hook

        # Predictions by entity id: serving asks this app for the feature values (serving imports no app above it).
        register_input_hook(resolve_feature_inputs)
        # Subject erasure and export reach the offline and online stores (registry/subjects.py).
        from features import subjects

        subjects.register()
        # On-demand feature functions register themselves when their module is imported.
        for module in settings.MODELWORKS_FEATURE_MODULES:
            import_module(module)
