"""The README's Quickstart, run as written against the platform `make run` starts: embedded (SQLite, no Redis), in a
var/ of its own, web + worker + beat.

The printed curl must answer 200; the README's `$MW`/`$TOKEN` curl too; the README's Python block (the client
registering a fresh scikit-learn pipeline, predicting, loading it back, starting a rollout) must run to the end; the
loaded model must predict bit-identically to the server; a tampered artifact must be refused by the client.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_wine

from tests.platform.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "modelworks_client"))  # the repo's own client, as tests/client does

from modelworks_client import ArtifactTampered, Client  # noqa: E402

PLATFORM_ENV = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "LOG_LEVEL", "PORT", "HOST")
BOOT_SECONDS = 240


def quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", quickstart(), flags=re.M | re.S)


class Platform:
    """bin/run-platform in the foreground of a process group, its output collected by a thread."""

    def __init__(self, var: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in PLATFORM_ENV and not k.startswith("MODELWORKS_")}
        env |= {
            "MODELWORKS_VAR_DIR": str(var),
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "1",
            "CELERY_CONCURRENCY": "1",
        }
        self.env = env
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_box(self) -> None:
        deadline = time.monotonic() + BOOT_SECONDS
        while "export MW=" not in self.output:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bin/run-platform printed no box:\n{self.output[-4000:]}")
            time.sleep(0.5)
        time.sleep(0.2)  # the rest of the box

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C, as a person stops it
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    running = Platform(tmp_path_factory.mktemp("quickstart") / "var")
    try:
        running.wait_for_box()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def exported(platform: Platform) -> dict[str, str]:
    """What pasting the box's `export ...` lines puts in a new shell's environment."""
    exports = "\n".join(line for line in platform.output.splitlines() if line.startswith("export "))
    done = subprocess.run(["bash", "-c", exports + "\nenv -0"], env=platform.env, capture_output=True, timeout=30)
    env = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    assert env["MODELWORKS_URL"] == env["MW"] and env["MODELWORKS_TOKEN"] == env["TOKEN"].strip() != ""
    return env


def curl(command: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"], env=env, capture_output=True, text=True, timeout=60
    )
    body, _, status = done.stdout.rpartition("\n")
    assert status == "200", f"{command}\n-> {status}: {body} {done.stderr}"
    return json.loads(body)


def test_the_printed_curl_and_the_readmes_curl_predict_with_the_demo_model(platform, exported):
    printed = re.search(r"^curl .*?-d '.*?'$", platform.output, flags=re.M | re.S).group(0)
    answer = curl(printed.replace("\\\n", " "), exported)
    assert answer["model"] == "diabetes-ridge" and len(answer["predictions"]) == 1

    readme = next(block for block in code_blocks("sh") if "curl" in block)
    command = " ".join(line for line in readme.replace("\\\n", " ").splitlines() if line.startswith("curl "))
    assert curl(command, exported)["predictions"] == answer["predictions"]

    # the console the box points at is styled: its static files are served with DEBUG on and no collectstatic
    stylesheet = f"{exported['MW']}/static/admin/css/base.css"
    styles = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", stylesheet],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert styles.stdout == "200"


def test_the_readmes_python_registers_predicts_loads_and_starts_a_rollout(platform, exported, tmp_path):
    (block,) = code_blocks("python")
    script = tmp_path / "quickstart.py"
    script.write_text(block)
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(script)], env=exported, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] in ("pending", "running"), done.stdout

    mw = Client(exported["MW"], token=exported["TOKEN"])
    assert mw.version("wine", 1).status == "production"
    X, _ = load_wine(return_X_y=True, as_frame=True)
    local = mw.load_model("models:/wine@production")
    served = mw.predict("wine", X, version=1)
    assert np.array_equal(local.predict(X), served["prediction"].to_numpy())
    probabilities = served[[c for c in served.columns if c.startswith("proba_")]].to_numpy()
    assert np.array_equal(local.predict_proba(X), probabilities)


def test_a_tampered_artifact_is_refused_by_the_client(platform, exported):
    mw = Client(exported["MW"], token=exported["TOKEN"])
    version = mw.version("wine", 1)
    stored = Path(exported["MODELWORKS_VAR_DIR"]) / "artifacts"
    (artifact,) = [p for p in stored.rglob("*") if p.is_file() and sha256_of(p) == version.sha256]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the archive
    artifact.write_bytes(bytes(data))
    with pytest.raises(ArtifactTampered, match="sha256|tampered"):
        mw.load_model("models:/wine/1")


def sha256_of(path: Path) -> str:

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_readmes_modelworks_command_lines_run(platform, exported, tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"^\.venv/bin/modelworks .*$", text, flags=re.M)
    assert lines, "the README shows the modelworks command"
    for line in lines:
        command = line.split("  #", 1)[0].replace(".venv/bin/", str(ROOT / ".venv" / "bin") + "/", 1)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=exported, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, f"{line}: {done.stderr}"
    assert json.loads(subprocess.run(
        [str(ROOT / ".venv" / "bin" / "modelworks"), "versions", "diabetes-ridge", "--json"], env=exported,
        capture_output=True, text=True, timeout=60,
    ).stdout)  # fmt: skip
