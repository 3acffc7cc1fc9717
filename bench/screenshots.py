"""Screenshots of the console for the README: the home, a model's page and a drift dashboard, as a person sees them.

Drives Debian's chromium (Playwright for Python, headless, never a downloaded browser) against a running platform
(`make run`; its box prints the admin login) and writes PNGs into docs/. Run it after `make run` in another shell:

    .venv/bin/python bench/screenshots.py --user admin --password '...' [--url http://127.0.0.1:8000] \\
        [--model breast-cancer-logreg] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MODELWORKS_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default=os.environ.get("MODELWORKS_ADMIN_USER", "admin"))
    parser.add_argument("--password", default=os.environ.get("MODELWORKS_ADMIN_PASSWORD"))
    parser.add_argument("--model", default="breast-cancer-logreg", help="the model whose page and dashboard are shot")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    if not args.password:
        parser.error("--password (or MODELWORKS_ADMIN_PASSWORD) is required: `make run` prints it")
    shots = {  # name: (path, whole page or the first screenful)
        "console-home.png": ("/admin/", True),
        "console-model.png": (f"/admin/models/{args.model}/", False),
        "console-drift.png": (f"/admin/monitoring/monitor/model/{args.model}/", False),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{args.url}/admin/login/")
        page.fill("#id_username", args.user)
        page.fill("#id_password", args.password)
        page.click("input[type=submit]")
        if "/login/" in page.url:
            print("login refused: check --user and --password", file=sys.stderr)
            return 1
        for name, (path, whole) in shots.items():
            page.goto(args.url + path)
            page.wait_for_load_state("networkidle")
            target = args.out / name
            page.screenshot(path=str(target), full_page=whole)
            print(f"{target.relative_to(REPO) if target.is_relative_to(REPO) else target}  ({path})")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
