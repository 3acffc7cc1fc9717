from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import warnings

        from serving import openapi  # noqa: F401 - registers the API-key security scheme with drf-spectacular
        from serving.subjects import register as register_subject_stores

        register_subject_stores()  # the prediction log, shadow copies and dead letters, for erasure and export

        # Serving hands models fitted on DataFrames a plain array in the same column order (model_cache.py);
        # scikit-learn would warn about the missing names on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
