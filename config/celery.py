"""The Celery app shared by the web process, workers and beat.

Settings live in `config/settings.py` under the CELERY_ prefix; tasks are discovered in each app's `tasks.py`.
"""

import gc
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelworks")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from config import celery_metrics  # noqa: E402,F401 - connects the worker metrics to Celery's signals


@task_prerun.connect
@task_postrun.connect
def close_old_connections(**kwargs) -> None:
    """Around every task, what Django does around every request: drop a connection that broke or outlived
    DB_CONN_MAX_AGE (Celery's fixup keeps connections for CELERY_DB_REUSE_MAX tasks instead of closing them all)."""
    from django.db import close_old_connections as close

    task = kwargs.get("task") or kwargs.get("sender")
    if not getattr(getattr(task, "request", None), "is_eager", False):  # run inline: the caller's connection
        close()


@worker_ready.connect
@worker_process_init.connect
def freeze_what_tasks_import(**kwargs) -> None:
    """In a worker process (the main one, and each prefork child): import what tasks run (every app's services, and
    with them scikit-learn, SciPy, pandas and pyarrow), then move every object there is to the collector's permanent
    generation. Otherwise a full collection walks those objects: measured in batch workers, 110-180 ms pauses every
    half minute or so, in the middle of a chunk (a 1M-row job of the logistic regression takes about 250 ms)."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("services")
    gc.collect()
    gc.freeze()
