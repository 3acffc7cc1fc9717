"""The Celery app shared by the web process, workers and beat.

Settings live in `config/settings.py` under the CELERY_ prefix; tasks are discovered in each app's `tasks.py`.
"""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

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
