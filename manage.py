#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path


def _use_the_clones_venv() -> None:
    """`python manage.py ...` as the README writes it, with a `python` that has no Django: run this same command
    with the clone's .venv (which `make run` creates) instead, or say in one line what to do."""
    venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
    # The marker stops a loop should the venv's own interpreter lack Django too (a broken install).
    if venv_python.exists() and not os.environ.get("MODELWORKS_MANAGE_REEXEC"):
        os.environ["MODELWORKS_MANAGE_REEXEC"] = "1"
        os.execv(venv_python, [str(venv_python), *sys.argv])  # noqa: S606 - the clone's own interpreter
    sys.exit(f"Django is not installed for {sys.executable}: run `make run` first (it creates .venv)")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError:
        _use_the_clones_venv()
    os.environ.pop("MODELWORKS_MANAGE_REEXEC", None)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
