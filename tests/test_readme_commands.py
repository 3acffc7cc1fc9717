"""Every `python manage.py ...` line of the README, as a person would type it after `make run`: in a new shell of the
clone, nothing exported, `python` being whatever the shell has.

Each line is parsed by its command's own argument parser (a misspelt option or a renamed command fails here). The
ones that need no file of the reader's own run for real, in fresh subprocesses, against one embedded platform seeded
as `make run` seeds it (its var/ holding the local.env that bin/run-platform writes), and must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_ENV = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "LOG_LEVEL")

# The lines that run for real: those a person reaches for first after `make run` (the ones the issue found broken
# for want of settings), needing nothing of their own. Each tuple runs in order (a later line depends on an earlier
# one); the tuples run side by side. A subprocess costs a few seconds of imports, so the rest are parsed only.
RUN = [
    ("demo_api_key",),
    ("ensure_admin --reset-password",),
    ("rollout status diabetes-ridge", "rollback diabetes-ridge"),
    ("experiment results", "experiment conclude"),
]


def readme_manage_lines() -> list[str]:
    """`python manage.py ...` lines of README.md: in shell code blocks (continuation lines joined, comments dropped)
    and in inline code."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"^```(?:sh|bash)\n(.*?)^```", text, flags=re.M | re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if line.startswith("python manage.py "):
                found.append(shlex.join(shlex.split(line, comments=True)))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    found += [shlex.join(shlex.split(m)) for m in re.findall(r"`(python manage\.py [^`]+)`", prose)]
    return [line for line in found if line != "python manage.py ..."]


LINES = readme_manage_lines()


def to_run(line: str) -> tuple[int, int] | None:
    """Which chain of RUN, and where in it, this line belongs to (None: parse only)."""
    command = line.removeprefix("python manage.py ")
    for i, chain in enumerate(RUN):
        for j, start in enumerate(chain):
            if command == start or command.startswith(start + " "):
                return i, j
    return None


def test_the_readme_shows_the_commands_a_user_needs():
    commands = {line.split()[2] for line in LINES}
    assert {"ensure_admin", "demo_api_key", "rollout", "rollback", "experiment", "check_drift"} <= commands
    assert "python manage.py ensure_admin --reset-password" in LINES
    assert not [line for line in LINES if "churn" in line]  # the demo's models, not an imaginary one


@pytest.mark.parametrize("line", LINES)
def test_each_readme_line_parses_with_its_commands_own_parser(line):
    name, *args = shlex.split(line)[2:]
    app = get_commands().get(name)
    assert app is not None, f"{name}: no such command"
    parser = load_command_class(app, name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except CommandError as exc:  # what argparse's errors become outside the command line
        pytest.fail(f"{line}: {exc}")


@pytest.fixture(scope="module")
def seeded_clone_var(tmp_path_factory) -> Path:
    """What `make run` leaves in var/: its local.env, the migrated database and the demo."""
    var = tmp_path_factory.mktemp("make-run") / "var"
    var.mkdir()
    (var / "local.env").write_text("# written by bin/run-platform (make run)\nDEBUG=1\n", encoding="utf-8")
    seed = "from django.core.management import call_command as c; c('migrate', verbosity=0); c('seed_demo')"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed],
        cwd=ROOT, env=new_shell(var), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return var


def new_shell(var: Path) -> dict[str, str]:
    """A new shell: nothing of the platform exported. MODELWORKS_VAR_DIR only keeps this test off the clone's own var/
    (the test's var/ stands where `make run` puts it)."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_ENV and k != "VIRTUAL_ENV"}
    return {**env, "MODELWORKS_VAR_DIR": str(var)}


def test_readme_lines_run_after_make_run_in_a_new_shell(seeded_clone_var):
    chains: dict[int, list[tuple[int, str]]] = {}
    for line in LINES:
        if (place := to_run(line)) is not None:
            chains.setdefault(place[0], []).append((place[1], line))
    assert len(chains) == len(RUN), "a line RUN names is no longer in the README"
    # `python` as the shell finds it (a python without Django re-runs manage.py with the clone's .venv)
    python = shutil.which("python") or sys.executable

    def run_chain(lines: list[tuple[int, str]]) -> list[tuple[str, subprocess.CompletedProcess]]:
        done = []
        for _, line in sorted(lines):
            argv = [python, *shlex.split(line)[1:]]
            done.append((line, subprocess.run(argv, cwd=ROOT, env=new_shell(seeded_clone_var), capture_output=True,
                                              text=True, timeout=180, check=False)))  # fmt: skip
        return done

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = [r for chain in pool.map(run_chain, chains.values()) for r in chain]
    failures = [f"{line}\n  exit {r.returncode}: {r.stderr.strip()[-500:]}" for line, r in results if r.returncode]
    assert not failures, "\n".join(failures)
    assert not [line for line, r in results if "Traceback" in r.stderr]
    out = {line.removeprefix("python manage.py "): r.stdout for line, r in results}
    assert out["demo_api_key"].startswith("mwk_")
    assert "password: " in out["ensure_admin --reset-password"]
    assert "rollout 1: v2 vs v1" in out["rollout status diabetes-ridge"]
