"""The console's webhook endpoints (admins only, like the API): made and changed through the services, the secret
shown once in a message when an endpoint is made; deliveries are read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from registry.models import WebhookDelivery, WebhookEndpoint
from registry.webhooks import events
from registry.webhooks import services as webhooks
from registry.webhooks.targets import TargetRefused, check_target


def _event_type_choices() -> list[tuple[str, str]]:
    return [(name, f"{name}: {meaning}") for name, meaning in sorted(events.event_types().items())]


class WebhookEndpointForm(forms.ModelForm):
    url = forms.CharField(max_length=2000, help_text="http(s) only; never a private, loopback or link-local address")
    event_types = forms.MultipleChoiceField(choices=_event_type_choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "event_types", "model", "description", "active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if "url" in self.changed_data:
            try:
                check_target(url)  # and again at every delivery
            except TargetRefused as exc:
                raise forms.ValidationError(str(exc)) from None
        return url


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ["created_at", "event_type", "status", "attempts", "outcome"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["__str__", "url", "model", "active", "created_at"]
    list_filter = ["active"]
    list_select_related = ["model"]
    raw_id_fields = ["model"]
    inlines = [DeliveryInline]

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        data = form.cleaned_data
        fields = {"url": data["url"], "event_types": list(data["event_types"]), "model": data.get("model"),
                  "description": data.get("description", ""), "active": data.get("active", False)}  # fmt: skip
        if change:
            webhooks.webhook_endpoint_update(endpoint=obj, actor=request.user, **fields)
            return
        made = webhooks.webhook_endpoint_create(actor=request.user, **fields)
        obj.pk = made.pk
        self.message_user(
            request, f"The secret signing {made}'s webhooks (shown once, store it now): {made.secret}", messages.WARNING
        )

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        webhooks.webhook_endpoint_delete(endpoint=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for endpoint in queryset:
            webhooks.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event_type", "endpoint", "status", "attempts", "outcome"]
    list_filter = ["status", "event_type"]
    list_select_related = ["endpoint"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
