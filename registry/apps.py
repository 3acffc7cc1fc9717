from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _ensure_roles(sender, using: str = "default", **kwargs) -> None:
    # The data migration creates the role groups once; a flush (TransactionTestCase) empties the table and then
    # sends post_migrate, so they are put back here. Sent once per app: act on the last one, when every app's
    # permissions exist.
    with_models = [config for config in apps.get_app_configs() if config.models_module is not None]
    if sender is not with_models[-1]:
        return
    from registry.permissions import ensure_roles

    ensure_roles(using)


class RegistryConfig(AppConfig):
    name = "registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_login_failed

        from registry import audit

        post_migrate.connect(_ensure_roles, dispatch_uid="registry.ensure_roles")
        # Logins and failed logins, whoever authenticates (the console, the token endpoint, a lockout backend).
        user_logged_in.connect(audit.on_login, dispatch_uid="registry.audit.login")
        user_login_failed.connect(audit.on_login_failed, dispatch_uid="registry.audit.login_failed")
