"""Settings of the bare Django server (bench/bare_django): no apps, no middleware, no database."""

import os

SECRET_KEY = os.environ.get("SECRET_KEY", "bench-bare-django-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.bare_django.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
