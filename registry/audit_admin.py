"""The audit trail in the console (read-only, admins only) and the users' page, whose changes it records.

Users are Django's own (django.contrib.auth's UserAdmin); this subclass records each creation, change (groups, that
is roles, included), password change and deletion with the state before and after.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse

from registry import audit, permissions
from registry.models import AuditEntry

ACTION_FAMILIES = ["api_key", "auth", "alert", "feature_entity", "feature_view", "grant", "monitor",
                   "serving_policy", "subject", "user"]  # fmt: skip


class ActionFamilyFilter(admin.SimpleListFilter):
    """Filter by kind of change; fixed choices, never a DISTINCT over the trail."""

    title = "kind of change"
    parameter_name = "family"

    def lookups(self, request: HttpRequest, model_admin):
        return [(family, family) for family in ACTION_FAMILIES]

    def queryset(self, request: HttpRequest, queryset):
        return queryset.filter(action__startswith=f"{self.value()}.") if self.value() else queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Searchable by request id (exact), actor, target; read-only. Export: GET /api/v1/audit/?format=csv|jsonl."""

    list_display = ["created_at", "action", "source", "actor_name", "target", "request_id", "remote_addr"]
    list_filter = [ActionFamilyFilter, "source", "created_at"]
    search_fields = ["=request_id", "=actor_name", "target", "=target_id", "=action"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    show_full_result_count = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return permissions.holds(request.user, permissions.ADMIN)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return permissions.holds(request.user, permissions.ADMIN)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


User = get_user_model()


class AuditedUserAdmin(UserAdmin):
    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        stored = User.objects.filter(pk=obj.pk).first() if change else None
        request._audit_user_before = audit.user_snapshot(stored) if stored is not None else None
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # the groups (roles) are saved here
        before, user = getattr(request, "_audit_user_before", None), form.instance
        after = audit.user_snapshot(user)
        if before != after:
            audit.record("user.changed" if change else "user.created", target=user, before=before, after=after,
                         actor=request.user, source=audit.current_source())  # fmt: skip

    def delete_model(self, request: HttpRequest, obj) -> None:
        # recorded first, while the row has its id; the admin's delete is one transaction with it
        audit.record("user.deleted", target=obj, before=audit.user_snapshot(obj), after=None, actor=request.user,
                     source=audit.current_source())  # fmt: skip
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for user in queryset:
            self.delete_model(request, user)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # the form was valid and saved
            user = User.objects.get(pk=id)
            audit.record("user.password_changed", target=user, before=None, after=None, actor=request.user,
                         source=audit.current_source())  # fmt: skip
        return response


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
