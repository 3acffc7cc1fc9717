"""Imported once by registry.sandbox's forkserver: Django and the model libraries, so each check only forks."""

from __future__ import annotations

import contextlib

import django
from django.apps import apps

if not apps.ready:
    django.setup()

import sklearn.ensemble  # noqa: E402, F401
import sklearn.linear_model  # noqa: E402, F401
import skops.io  # noqa: E402, F401

import registry.artifacts  # noqa: E402, F401

with contextlib.suppress(ImportError):  # an optional extra
    import onnxruntime  # noqa: F401
