from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from serving import openapi  # noqa: F401 - registers the API-key security scheme with drf-spectacular
