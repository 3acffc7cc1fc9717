"""The console in a real browser: Debian's chromium driven by Playwright for Python (never a downloaded browser).

One seeded platform per test module: the demo (seed_demo, as `make run` seeds it) committed to this worker's test
database and served by Django's live-server thread (static files included), so every test of the module sees the
same models, rollout and alert a new user sees. The module's teardown flushes the database for the tests after it.

Every test module here says `pytestmark = pytest.mark.django_db` (that is what makes pytest-django create the test
database); the seeded rows are committed outside the test's transaction, so the server thread sees them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = os.environ.get("MODELWORKS_CHROMIUM", "/usr/bin/chromium")
ADMIN_USER, ADMIN_PASSWORD = "console-admin", "a-long-console-password"
VIEWER_USER = "console-viewer"  # staff in the viewer role (same password)


def wait_until(page, expression: str, timeout_ms: int = 15_000) -> None:
    """Poll a JavaScript expression from here until it is true. Playwright's own wait_for_function evaluates it with
    eval inside the page, which the console's Content-Security-Policy (no 'unsafe-eval') refuses; page.evaluate
    goes through the browser's debugging protocol, which the policy does not cover, so the page keeps its CSP."""
    import time

    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout_ms} ms: {expression}"
        page.wait_for_timeout(100)


@dataclass(frozen=True)
class Console:
    url: str
    username: str = ADMIN_USER
    password: str = ADMIN_PASSWORD


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium for one module. Module-scoped on purpose: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break the tests after it on the same worker that call `asyncio.run()` (the
    ASGI front's tests). While it runs, the ORM calls the tests make around it are still synchronous, one at a time,
    so Django's async-safety guard is lifted for exactly that long (and never for the process: `check --deploy`
    warns about the variable)."""
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.fail(f"chromium is not installed at {CHROMIUM}: run ./bin/ensure_tools.sh (make test does)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def console_artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console-artifacts")


@pytest.fixture(autouse=True)
def artifact_root(settings, console_artifacts):
    """The module's artifacts stay where the module's seed stored them (tests/conftest.py gives each test its own)."""
    settings.STORAGES = _storages(settings.STORAGES, console_artifacts)
    return console_artifacts


def _storages(storages: dict, root: Path) -> dict:
    return {
        **storages,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }


@pytest.fixture(scope="module")
def console(django_db_setup, django_db_blocker, console_artifacts) -> Iterator[Console]:
    """The demo platform, seeded and served for the whole module."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.test.utils import override_settings
    from pytest_django.live_server_helper import LiveServer

    with django_db_blocker.unblock(), override_settings(STORAGES=_storages(settings.STORAGES, console_artifacts)):
        call_command("seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115 (closed with the process)
        get_user_model().objects.create_superuser(ADMIN_USER, "admin@example.com", ADMIN_PASSWORD)
        viewer = get_user_model().objects.create_user(VIEWER_USER, "viewer@example.com", ADMIN_PASSWORD, is_staff=True)
        viewer.groups.add(Group.objects.get(name="viewer"))
        server = LiveServer("localhost")
        server._live_server_modified_settings.enable()
        try:
            yield Console(url=server.url)
        finally:
            server._live_server_modified_settings.disable()
            server.stop()
            call_command("flush", interactive=False, verbosity=0)


def _logged_in(browser, console: Console, username: str) -> Iterator:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto(f"{console.url}/admin/login/")
    tab.fill("#id_username", username)
    tab.fill("#id_password", console.password)
    tab.click("input[type=submit]")
    tab.wait_for_url(f"{console.url}/admin/")
    yield tab
    context.close()


@pytest.fixture
def page(browser, console: Console) -> Iterator:
    """A browser tab logged in to the console as a superuser."""
    yield from _logged_in(browser, console, console.username)


@pytest.fixture
def viewer_page(browser, console: Console) -> Iterator:
    """A browser tab logged in to the console as a member of the viewer role."""
    yield from _logged_in(browser, console, VIEWER_USER)
