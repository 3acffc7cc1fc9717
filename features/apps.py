from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class FeaturesConfig(AppConfig):
    name = "features"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # On-demand feature functions register themselves when their module is imported.
        for module in settings.MODELWORKS_FEATURE_MODULES:
            import_module(module)
