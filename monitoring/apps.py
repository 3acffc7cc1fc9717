from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    demo, demo_order = "monitoring.demo.seed_monitoring_demo", 20  # a drifting monitor on breast-cancer-logreg
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from monitoring import ood, subjects
        from serving.ood import register_scorer_source

        subjects.register()  # feedback and business events, for subject erasure and export (registry/subjects.py)
        register_scorer_source(ood.scorer_source)  # per-version OOD scores on the prediction path (serving/ood.py)
