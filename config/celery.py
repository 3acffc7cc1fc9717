"""The Celery app shared by the web process, workers and beat.

Settings live in `config/settings.py` under the CELERY_ prefix; tasks are discovered in each app's `tasks.py`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelworks")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from config import celery_metrics  # noqa: E402,F401 - connects the worker metrics to Celery's signals
