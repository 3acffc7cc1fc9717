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
