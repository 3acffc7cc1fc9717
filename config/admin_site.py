"""The console: Django's admin site, with a home page that says what is live and the apps in the order people work.

Installed as the default admin site by `config.apps.ConsoleAdminConfig` (Django's documented way to replace
`admin.site`), so every `@admin.register` in the apps lands here.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

APP_ORDER = ["registry", "serving", "rollouts", "experiments", "monitoring", "features"]


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Modelworks"
    site_title = "Modelworks"
    index_title = "What is live"
    site_url = "/admin/"  # "View site" goes home: the console is the site
    index_template = "admin/console_index.html"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        apps = super().get_app_list(request, app_label)
        rank = {label: i for i, label in enumerate(APP_ORDER)}
        return sorted(apps, key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from config import charts, console  # the apps' models are loaded by the time a page is asked for

        statuses = console.model_statuses()
        for status in statuses:
            status.sparkline = charts.sparkline(status.per_minute, label=f"{status.model.name}: requests per minute")
        context = {
            "statuses": statuses,
            "activity": console.recent_activity(),
            "now": timezone.now(),
            **(extra_context or {}),
        }
        return super().index(request, context)
