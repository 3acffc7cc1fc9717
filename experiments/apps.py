from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    demo, demo_order = "experiments.demo.seed_experiments", 30  # a running A/B test on the demo logistic regression
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from experiments.services import running_experiment_owner
        from experiments.split import experiment_split
        from registry import traffic as registry_traffic
        from serving import traffic

        traffic.register_split_source(experiment_split)
        registry_traffic.register_owner_check(running_experiment_owner)
        from experiments import subjects

        subjects.register()  # exposures, for subject erasure and export (registry/subjects.py)
