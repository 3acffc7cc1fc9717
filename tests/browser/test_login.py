"""A data scientist opens the console: the login page, then the admin home with the platform's name on it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_a_wrong_password_is_refused_in_words(browser, console):
    tab = browser.new_page()
    tab.goto(f"{console.url}/admin/login/")
    tab.fill("#id_username", console.username)
    tab.fill("#id_password", "not-the-password")
    tab.click("input[type=submit]")
    assert "Please enter the correct username and password" in tab.inner_text("body")
    tab.close()


def test_logged_in_the_console_names_the_platform_and_the_demo_models(page, console):
    assert "Modelworks" in page.inner_text("#site-name")
    page.goto(f"{console.url}/admin/registry/registeredmodel/")
    body = page.inner_text("#result_list")
    for name in ("breast-cancer-logreg", "breast-cancer-forest", "diabetes-ridge"):
        assert name in body


def test_five_wrong_passwords_lock_the_login_out_and_the_page_says_until_when(browser, console):
    tab = browser.new_page()
    for _ in range(5):
        tab.goto(f"{console.url}/admin/login/")
        tab.fill("#id_username", "mallory")
        tab.fill("#id_password", "guess")
        tab.click("input[type=submit]")
    text = tab.inner_text("body")
    assert "Too many failed logins for 'mallory' from your address: try again in 15 minutes (after" in text
    assert "Back to the login page" in text
    tab.close()


def test_the_console_runs_under_its_content_security_policy(page, console):
    """Every page sends the CSP (no inline scripts allowed) and the browser reports no violation: the console's
    scripts, charts and live refresh all come from static files and JSON blocks."""
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text
            else None)  # fmt: skip
    for path in ("/admin/", "/admin/models/diabetes-ridge/", "/admin/monitoring/monitor/", "/api/docs/",
                 "/api/v1/models/"):  # fmt: skip
        answer = page.goto(f"{console.url}{path}")
        assert "script-src 'self';" in answer.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    page.goto(f"{console.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info", timeout=15_000)  # Swagger UI started from its script file
    page.goto(f"{console.url}/admin/models/diabetes-ridge/")
    page.wait_for_load_state("networkidle")
    assert page.locator(".mw-metric-chart [data-chart]").first.evaluate("el => el.mwChart.data.labels") == ["v1", "v2"]
    assert violations == []
