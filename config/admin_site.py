"""The console: Django's admin site, with a home page that says what is live and the apps in the order people work.

Installed as the default admin site by `config.apps.ConsoleAdminConfig` (Django's documented way to replace
`admin.site`), so every `@admin.register` in the apps lands here.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
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

    def get_urls(self):
        return [
            path("models/<slug:name>/", self.admin_view(self.model_page), name="model_page"),
            *super().get_urls(),
        ]

    def model_page(self, request: HttpRequest, name: str) -> HttpResponse:
        """GET: the model's page. POST `try`: a prediction through the serving service; POST `move`: an alias move
        through the registry's service (which checks the permission)."""
        from config import model_page
        from registry.models import RegisteredModel
        from registry.permissions import alias_permission, holds
        from registry.selectors import production_version

        model = get_object_or_404(RegisteredModel, name=name)
        serving_version = production_version(model) or model.versions.order_by("-version").first()
        signature = serving_version.signature if serving_version else {"inputs": []}
        form = model_page.TryPredictionForm(signature=signature)
        answer = None
        if request.method == "POST" and request.POST.get("action") == "move":
            return self._move_alias(request, model)
        if request.method == "POST" and request.POST.get("action") == "try":
            form = model_page.TryPredictionForm(request.POST, signature=signature)
            if form.is_valid():
                try:
                    answer = model_page.try_prediction(model, form, request=request)
                except Exception as exc:  # a refused or failed prediction is shown as the API would say it
                    form.add_error(None, f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}")
        compare = [int(v) for v in request.GET.getlist("compare") if v.isdigit()]
        context = {
            **self.each_context(request),
            **model_page.page_context(model, compare),
            "compare_asked": "compared" in request.GET,
            "title": model.name,
            "try_form": form,
            "try_version": serving_version,
            "answer": answer,
            # an alias's move form is shown to those who may move it (deploy on the model for a protected one)
            "movable_aliases": [
                a.name for a in model.aliases.all() if holds(request.user, alias_permission(model, a.name), model)
            ],
        }
        return TemplateResponse(request, "admin/console_model.html", context)

    def _move_alias(self, request: HttpRequest, model) -> HttpResponse:
        from registry import services as registry

        page = reverse("admin:model_page", args=[model.name])
        alias, number = request.POST.get("alias", ""), request.POST.get("version", "")
        version = model.versions.filter(version=int(number)).first() if number.isdigit() else None
        if version is None:
            messages.error(request, f"{model.name} has no version {number!r}.")
            return HttpResponseRedirect(page)
        try:  # the service decides who may move which alias (registry/permissions.py)
            registry.alias_set(model=model, name=alias, version=version, actor=request.user)
        except (ValidationError, PermissionDenied) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            messages.error(request, f"{alias} was not moved: {text}")
        else:
            messages.success(request, f"{alias} now points at v{version.version}.")
        return HttpResponseRedirect(page)

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from config import charts, console  # the apps' models are loaded by the time a page is asked for

        statuses = console.model_statuses()
        for status in statuses:
            status.sparkline = charts.sparkline(status.per_minute, label=f"{status.model.name}: requests per minute")
        context = {
            "statuses": statuses,
            "activity": console.recent_activity(),
            "now": timezone.now(),
            "refresh_seconds": settings.MODELWORKS_CONSOLE_REFRESH_S,
            **(extra_context or {}),
        }
        return super().index(request, context)
