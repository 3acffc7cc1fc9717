"""Serving benchmark: Modelworks' prediction endpoint against MLflow's scoring server, on loopback, on this machine.

How it measures
- Modelworks runs as deployed: gunicorn with the production settings (DEBUG=0, platform/gunicorn.conf.py when it
  exists), Postgres, Redis, the prediction log on, API-key auth on every request. The database modelworks_bench is
  dropped and recreated, migrated and seeded (`seed_demo`) at the start of each run; an API key with `predict:*` is
  made with `create_api_key`. The headline run has the prediction cache off (MODELWORKS_PREDICTION_CACHE=0), so
  every request runs the model; a second, labelled run has it on (skip it with --no-cache-run).
- The cache is judged on workloads of its own (--workloads, both arms in the same run, --rounds times each, off
  then on, medians): "unique", no row ever repeats (the cache can only cost), and "half", every other request one
  of the 143 test rows (50% repeats). Targets: cache on >= cache off on "unique", >= 1.5x on "half", at every
  concurrency measured. "cycle" is the headline load (the 143 rows cycled: all repeats, once warm).
- The tail and the memory (issue 18, item 7) are judged against a bare Django view (--bare: bench/bare_django, the
  same body and estimator, gunicorn's gthread worker, WEB_CONCURRENCY workers) and against the platform served from
  another checkout (--before: the code before a change), all in the same rounds, in reverse order every other round.
  Targets: p99 at c=8 <= 2x the bare view's, req/s >= 0.95x the code before's, the web tree (master and workers,
  the demo loaded) under 400 MiB, printed both as PSS and as RSS summed.
- MLflow serves the same two models, trained the same way (bench/mlflow_models.py, in its own venv under
  bench/.mlflow-venv with the project's scikit-learn/numpy/scipy/pandas versions), with
  `mlflow models serve --env-manager local --workers 2`: once as shipped, once with TCP_NODELAY set on accepted
  sockets (bench/nodelay/sitecustomize.py on PYTHONPATH), since uvicorn's multi-worker mode leaves Nagle's algorithm
  on and every keep-alive response then stalls about 40 ms. The better of the two is the one to beat.
- Load: wrk on 127.0.0.1 only, 2 threads, each request one row of the breast-cancer test split (143 distinct rows,
  cycled; the same rows for both servers), a warm-up run then a measured run per server, model and concurrency.
  Figures come from wrk's own statistics (bench/wrk_post.lua prints them as JSON): requests/s, p50, p99 and errors
  (socket errors, timeouts, and HTTP statuses >= 400).
- Prediction log: after gunicorn is stopped with SIGTERM (workers flush their buffers), the rows in
  serving_predictionlog must lie between the requests wrk completed with 2xx (plus the smoke requests) and the
  requests wrk issued: a load generator stopped by time leaves up to one request per connection in flight, which the
  server still answers and logs, so an exact count is not defined; the bracket is tight (at most c apart per run).

Everything runs on this machine; every process started is stopped on exit, Ctrl-C and SIGTERM included.
Results: a table on stdout and bench/results/serving-<UTC timestamp>.json. Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = BENCH / ".work"
LOGS = WORK / "logs"
RESULTS = BENCH / "results"
MLFLOW_VENV = BENCH / ".mlflow-venv"
NODELAY_DIR = BENCH / "nodelay"
LUA_SCRIPT = BENCH / "wrk_post.lua"
PROJECT_PY = REPO / ".venv" / "bin" / "python"
GUNICORN = REPO / ".venv" / "bin" / "gunicorn"
GUNICORN_CONF = REPO / "platform" / "gunicorn.conf.py"
GUNICORN_FALLBACK = ["--workers", "2", "--worker-class", "uvicorn_worker.UvicornWorker"]

HOST = "127.0.0.1"  # the only address this benchmark ever sends traffic to
DB_NAME = os.environ.get("BENCH_DB_NAME", "modelworks_bench")  # another name when several checkouts bench at once
DB_ADMIN = {"host": HOST, "port": 5432, "user": "postgres", "dbname": "postgres"}
REDIS_URL = f"redis://{HOST}:6379/{int(os.environ.get('BENCH_REDIS_DB', '14'))}"  # as bench/prepare.sh
MODELS = ("breast-cancer-logreg", "breast-cancer-forest")
WORKLOADS = ("cycle", "unique", "half")
CACHE_TARGETS = {"unique": 1.0, "half": 1.5}  # cache on / cache off req/s, medians, per model and concurrency
MLFLOW_SPEC = "mlflow>=3,<4"
PINNED = ("scikit-learn", "numpy", "scipy", "pandas")  # same versions in the MLflow venv as in the project's

PLATFORM = "modelworks"
PLATFORM_CACHED = "modelworks (cache on)"
PLATFORM_BEFORE = "modelworks (before)"  # --before: the same platform from another checkout (the code before a change)
BARE = "bare django"  # --bare: bench/bare_django, the model call alone behind a plain Django view
MLFLOW_SHIPPED = "mlflow (as shipped)"
MLFLOW_NODELAY = "mlflow (TCP_NODELAY)"
# Throughput targets: platform req/s over the better MLflow's, per model and concurrency.
RPS_TARGETS = {
    ("breast-cancer-logreg", 64): 1.5,
    ("breast-cancer-forest", 64): 5.0,
    ("breast-cancer-logreg", 8): 1.0,
    ("breast-cancer-forest", 8): 1.0,
}
P99_TARGET_MS = 50.0
P99_TARGET_CONCURRENCY = 64
# Issue 18, item 7: the tail at c=8 against the bare Django view's (same run), throughput against the code before
# (medians over --rounds; 0.95: within the spread of medians between rounds of the same code), the web tree's memory.
BARE_P99_FACTOR = 2.0
BARE_P99_CONCURRENCY = 8
BEFORE_RPS_FACTOR = 0.95
TREE_MEMORY_TARGET_MIB = 400.0
BARE_THREADS = 4  # gthread threads per bare worker: 8 connections over 2 workers


class BenchError(Exception):
    """A step failed; the message says which and where its log is."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every started process is stopped."""


# --------------------------------------------------------------------------------------------- options and records


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: tuple[int, ...]
    threads: int
    models: tuple[str, ...]
    platform: bool
    mlflow: bool
    cache_run: bool
    timeout: int
    workloads: tuple[str, ...] = ("cycle",)
    rounds: int = 1
    bare: bool = False
    before: str = ""


@dataclass
class Run:
    server: str
    model: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    sent: int
    errors: int
    error_detail: dict[str, int]
    duration_s: float
    workload: str = "cycle"


@dataclass
class LogCheck:
    server: str
    logged: int
    completed_ok: int
    issued: int
    passed: bool


@dataclass
class Memory:
    """The web process tree (gunicorn's master and workers) after a server's runs, the demo models loaded: RSS
    summed (pages shared by fork counted once per process) and PSS summed (shared pages split between sharers)."""

    server: str
    processes: int
    rss_mib: float
    pss_mib: float
    largest_rss_mib: float = 0.0


@dataclass
class Report:
    started_at: str
    options: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    log_checks: list[LogCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of each measured run (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each measured run")
    parser.add_argument("--connections", default="8,64", help="comma-separated concurrencies (default 8,64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--skip-platform", action="store_true", help="measure MLflow only")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure Modelworks only")
    parser.add_argument("--no-cache-run", action="store_true", help="skip the extra run with the prediction cache on")
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout in seconds")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of "
                        + ", ".join(WORKLOADS) + " (default: all)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="Modelworks runs per arm, alternating (medians)")
    parser.add_argument("--bare", action="store_true", help="also measure a bare Django view doing only the model "
                        "call (bench/bare_django; gunicorn gthread, 2 workers), in the same rounds")  # fmt: skip
    parser.add_argument("--before", default="", metavar="CHECKOUT", help="also measure the platform served from this "
                        "checkout (the code before a change; same database), in the same rounds")  # fmt: skip
    args = parser.parse_args(argv)
    workloads = tuple(w for w in args.workloads.split(",") if w)
    if not workloads or set(workloads) - set(WORKLOADS):
        parser.error(f"--workloads: a comma-separated subset of {', '.join(WORKLOADS)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.before and not (Path(args.before) / "config" / "asgi.py").exists():
        parser.error(f"--before: {args.before} is not a checkout of this project")
    models = tuple(m for m in args.models.split(",") if m)
    if unknown := set(models) - set(MODELS):
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    connections = tuple(int(c) for c in args.connections.split(",") if c)
    if not connections or min(connections) < args.threads:
        parser.error("each concurrency must be at least the number of wrk threads")
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be >= 1 and --warmup >= 0")
    return Options(
        duration=args.duration, warmup=args.warmup, connections=connections, threads=args.threads, models=models,
        platform=not args.skip_platform, mlflow=not args.skip_mlflow, cache_run=not args.no_cache_run,
        timeout=args.timeout, workloads=workloads, rounds=args.rounds, bare=args.bare,
        before=str(Path(args.before).resolve()) if args.before else "",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- processes


class Processes:
    """Every process this benchmark starts, each in its own session so its whole group can be stopped."""

    def __init__(self) -> None:
        self._running: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, cmd: list[str], *, env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv built here, no shell
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self._running[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[bytes], *, group: bool, grace: float = 30.0) -> int | None:
        """SIGTERM (to the process alone, or to its whole group), wait `grace` seconds, then SIGKILL the group."""
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM, group=group)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        self._signal(proc, signal.SIGKILL, group=True)  # leftovers: workers, the shell MLflow execs through
        with suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self._running.pop(proc.pid, None)
        return proc.returncode

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int, *, group: bool) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)  # the group id is the pid: start_new_session made it a leader
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        for proc in list(self._running.values()):
            self.stop(proc, group=True, grace=10.0)


def run_step(cmd: list[str], *, env: dict[str, str], log: Path, timeout: float) -> str:
    """Run a short command to completion (killed on timeout or Ctrl-C); its stdout, also kept in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv built here, no shell
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(cmd[:3])} ... took over {timeout:.0f}s") from None
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(cmd[:3])} ... exited {result.returncode}; see {log}:\n{tail(result.stderr)}")
    return result.stdout


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"the server exited ({proc.returncode}) before answering; see {log}:\n{tail(log.read_text())}"
            )
        try:
            if http_request(port, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise BenchError(f"GET {path} did not answer 200 within {timeout:.0f}s; see {log}")


# ------------------------------------------------------------------------------------------------------- load


def test_rows() -> list[dict[str, float]]:
    """The breast-cancer test split, as the demo's seed splits it: 143 rows, the 30 features as sklearn names them."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    _, X_test, _, _ = train_test_split(X, y, test_size=0.25, random_state=42)
    return X_test.to_dict(orient="records")


def write_bodies(rows: list[dict[str, float]]) -> dict[str, Path]:
    """One JSON body per line, single-row requests: the platform's format and MLflow's, the same rows in order."""
    WORK.mkdir(parents=True, exist_ok=True)
    files = {"platform": WORK / "bodies-platform.jsonl", "mlflow": WORK / "bodies-mlflow.jsonl"}
    files["platform"].write_text("".join(json.dumps({"instances": [r]}) + "\n" for r in rows))
    files["mlflow"].write_text("".join(json.dumps({"dataframe_records": [r]}) + "\n" for r in rows))
    return files


@dataclass(frozen=True)
class Target:
    """Where wrk sends its load."""

    server: str
    model: str
    port: int
    path: str
    bodies: Path
    authorization: str = ""
    workload: str = "cycle"


_salts = iter(range(1, 1_000_000))  # one per wrk run: no two runs send the same "unique" row


def wrk(target: Target, connections: int, seconds: int, opts: Options, label: str) -> Run:
    url = f"http://{HOST}:{target.port}{target.path}"
    cmd = [
        wrk_binary(), "--threads", str(opts.threads), "--connections", str(connections), "--duration", f"{seconds}s",
        "--timeout", f"{opts.timeout}s", "--latency", "--script", str(LUA_SCRIPT), url, "--",
        str(target.bodies), target.authorization, target.workload, str(next(_salts)),
    ]  # fmt: skip
    log = LOGS / f"wrk-{slug(target.server)}-{target.model}-{target.workload}-c{connections}-{label}.txt"
    output = run_step(cmd, env=dict(os.environ), log=log, timeout=seconds + opts.timeout + 30)
    return parse_wrk(output, target, connections, log)


def parse_wrk(output: str, target: Target, connections: int, log: Path) -> Run:
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk printed no BENCH_JSON line; see {log}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = data["duration_us"] / 1e6
    latency = data["latency_us"]
    errors = data["errors"]
    return Run(
        server=target.server, model=target.model, connections=connections,
        rps=data["requests"] / seconds, p50_ms=latency["p50"] / 1000, p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000, max_ms=latency["max"] / 1000, requests=data["requests"], sent=data["sent"],
        errors=sum(errors.values()), error_detail=errors, duration_s=seconds, workload=target.workload,
    )  # fmt: skip


def measure(target: Target, opts: Options) -> tuple[list[Run], list[Run]]:
    """Warm-up and measured runs at each concurrency: (measured, every run including warm-ups)."""
    measured, every = [], []
    for connections in opts.connections:
        if opts.warmup:
            every.append(wrk(target, connections, opts.warmup, opts, "warmup"))
        run = wrk(target, connections, opts.duration, opts, "measured")
        every.append(run)
        measured.append(run)
        print(f"  {target.server:<22} {target.model:<22} {target.workload:<7} c={connections:<3} {run.rps:9.1f} req/s  "
              f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  errors {run.errors}", flush=True)  # fmt: skip
    return measured, every


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk (bench/serving.sh does it)")
    return path


# --------------------------------------------------------------------------------------------------- platform


def platform_env(cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48), ALLOWED_HOSTS=f"{HOST},localhost", SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0", DATABASE_URL=f"postgres://postgres@{HOST}:5432/{DB_NAME}",
        REDIS_URL=REDIS_URL, MODELWORKS_PREDICTION_CACHE="1" if cache else "0",
        MODELWORKS_VAR_DIR=str(WORK / "var"),  # artifacts of the bench's own seed, never the developer's var/
    )  # fmt: skip
    return env


def recreate_database() -> None:
    import psycopg2

    conn = psycopg2.connect(**DB_ADMIN, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        conn.close()
    shutil.rmtree(WORK / "var", ignore_errors=True)


def query_one(sql: str, params: tuple[Any, ...] = ()) -> Any:
    import psycopg2

    conn = psycopg2.connect(**{**DB_ADMIN, "dbname": DB_NAME}, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0] if cur.description else None
    finally:
        conn.close()


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).flushdb()


def prepare_platform() -> str:
    """A fresh database, migrated and seeded; the raw API key (`create_api_key` prints it alone on its last line)."""
    recreate_database()
    env = platform_env(cache=False)
    manage = [str(PROJECT_PY), "manage.py"]
    run_step([*manage, "migrate", "--noinput"], env=env, log=LOGS / "platform-migrate.txt", timeout=300)
    seeded = run_step([*manage, "seed_demo"], env=env, log=LOGS / "platform-seed.txt", timeout=300)
    print(indent(seeded))
    cmd = [*manage, "create_api_key", f"bench-{int(time.time())}", "--scope", "predict:*"]
    stdout = run_step(cmd, env=env, log=LOGS / "platform-api-key.txt", timeout=120)
    (LOGS / "platform-api-key.txt").write_text("(the key is not kept)\n")
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        raise BenchError("create_api_key printed no key")
    return lines[-1]


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def gunicorn_cmd(port: int, checkout: Path = REPO) -> tuple[list[str], str]:
    """The deployed command line (of the code in `checkout`, run from there), and which configuration it uses."""
    base = [str(GUNICORN), "config.asgi:application", "--bind", f"{HOST}:{port}"]
    conf = checkout / "platform" / "gunicorn.conf.py"
    if conf.exists():
        return [*base, "-c", str(conf)], str(conf.relative_to(checkout))
    return [*base, *GUNICORN_FALLBACK], "fallback: " + " ".join(GUNICORN_FALLBACK)


def smoke_platform(port: int, key: str, bodies: Path) -> int:
    """One request per model, checked field by field; the number answered (each is a logged prediction)."""
    body = bodies.read_text().splitlines()[0].encode()
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    for model in MODELS:
        status, raw = http_request(port, "POST", f"/api/v1/models/{model}/predict", body, headers)
        if status != 200:
            raise BenchError(f"POST /api/v1/models/{model}/predict answered {status}: {raw[:300]!r}")
        answer = json.loads(raw)
        missing = {"predictions", "probabilities", "request_id", "version"} - set(answer)
        if missing:
            raise BenchError(f"the {model} answer lacks {', '.join(sorted(missing))}: {raw[:300]!r}")
    return len(MODELS)


def settled_log_count(timeout: float = 20.0) -> int:
    """The prediction log's row count once it stops changing (the flusher may still be writing)."""
    deadline, last = time.monotonic() + timeout, -1
    while True:
        count = query_one("SELECT count(*) FROM serving_predictionlog")
        if count == last or time.monotonic() > deadline:
            return count
        last = count
        time.sleep(1.5)


def run_platform(
    cache: bool, key: str, bodies: Path, opts: Options, procs: Processes, report: Report, checkout: Path = REPO
) -> None:  # fmt: skip
    server = PLATFORM_BEFORE if checkout != REPO else PLATFORM_CACHED if cache else PLATFORM
    query_one("TRUNCATE serving_predictionlog")
    flush_redis()
    port = free_port()
    cmd, config = gunicorn_cmd(port, checkout)
    report.environment["gunicorn" if checkout == REPO else "gunicorn (before)"] = config
    log = LOGS / f"{slug(server)}-gunicorn.txt"
    where = "" if checkout == REPO else f" from {checkout}"
    print(f"\n{server}: gunicorn ({config}){where} on {HOST}:{port}, prediction cache {'on' if cache else 'off'}",
          flush=True)  # fmt: skip
    proc = procs.start(cmd, env=platform_env(cache), log=log, cwd=checkout)
    every: list[Run] = []
    smoke = 0
    try:
        wait_ready(proc, port, "/healthz", log)
        smoke = smoke_platform(port, key, bodies)
        for model in opts.models:
            for workload in opts.workloads:
                target = Target(server, model, port, f"/api/v1/models/{model}/predict", bodies, f"Api-Key {key}",
                                workload)  # fmt: skip
                measured, runs = measure(target, opts)
                report.runs.extend(measured)
                every.extend(runs)
        report.memory.append(tree_memory(server, proc.pid))
        print_memory(report.memory[-1])
    finally:
        code = procs.stop(proc, group=False, grace=60)  # SIGTERM to the master: a graceful, flushing shutdown
        print(f"  gunicorn stopped (exit {code}); log {log.relative_to(REPO)}")
    report.log_checks.append(check_log(server, smoke, every))


def artifact_file(model: str) -> Path:
    """The production version's artifact of `model`, as the bench's seed stored it (local artifact storage)."""
    relative = query_one(
        "SELECT v.artifact_path FROM registry_modelalias a JOIN registry_modelversion v ON v.id = a.version_id"
        " JOIN registry_registeredmodel m ON m.id = v.model_id WHERE m.name = %s AND a.name = 'production'",
        (model,),
    )
    return WORK / "var" / "artifacts" / relative


def bare_cmd(port: int) -> list[str]:
    """gunicorn as a plain Django deployment runs it: the threaded worker (keep-alive connections, as wrk keeps
    them), the platform's worker count."""
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    return [
        str(GUNICORN), "bench.bare_django.wsgi:application", "--bind", f"{HOST}:{port}", "--workers", workers,
        "--worker-class", "gthread", "--threads", str(BARE_THREADS), "--keep-alive", "5",
    ]  # fmt: skip


def run_bare(bodies: Path, opts: Options, procs: Processes, report: Report) -> None:
    """bench/bare_django: the same JSON body, the same estimator's predict_proba and predict, nothing else."""
    for model in opts.models:
        port = free_port()
        env = dict(os.environ)
        env.update(BARE_MODEL_PATH=str(artifact_file(model)), DJANGO_SETTINGS_MODULE="bench.bare_django.settings")
        log = LOGS / f"bare-django-{model}.txt"
        print(f"\n{BARE}: {model} on {HOST}:{port} (gunicorn gthread, {env.get('WEB_CONCURRENCY', '2')} workers x "
              f"{BARE_THREADS} threads)", flush=True)  # fmt: skip
        proc = procs.start(bare_cmd(port), env=env, log=log)
        try:
            wait_ready(proc, port, "/healthz", log)
            body = bodies.read_text().splitlines()[0].encode()
            status, raw = http_request(port, "POST", "/predict", body, {"Content-Type": "application/json"})
            if status != 200 or "probabilities" not in json.loads(raw):
                raise BenchError(f"the bare Django view answered {status}: {raw[:300]!r}")
            for workload in opts.workloads:
                measured, _ = measure(Target(BARE, model, port, "/predict", bodies, workload=workload), opts)
                report.runs.extend(measured)
            report.memory.append(tree_memory(f"{BARE} ({model})", proc.pid))
            print_memory(report.memory[-1])
        finally:
            procs.stop(proc, group=True, grace=20)


def print_memory(memory: Memory) -> None:
    print(f"  web process tree: {memory.processes} processes, RSS {memory.rss_mib:.0f} MiB, PSS {memory.pss_mib:.0f} "
          f"MiB (largest process RSS {memory.largest_rss_mib:.0f} MiB)")  # fmt: skip


def tree_memory(server: str, root: int) -> Memory:
    """RSS and PSS of `root` and its descendants, from /proc (kB fields of status and smaps_rollup)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    rss = pss = largest = 0
    for pid in tree:
        with suppress(OSError):
            own = _kb(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
            pss += _kb(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
            rss += own
            largest = max(largest, own)
    return Memory(server, len(tree), rss / 1024, pss / 1024, largest / 1024)


def _kb(text: str, name: str) -> int:
    line = next((ln for ln in text.splitlines() if ln.startswith(name)), None)
    return int(line.split()[1]) if line else 0


def check_log(server: str, smoke: int, runs: list[Run]) -> LogCheck:
    logged = settled_log_count()
    completed_ok = smoke + sum(r.requests - r.error_detail["status"] for r in runs)
    issued = smoke + sum(r.sent for r in runs)
    check = LogCheck(server, logged, completed_ok, issued, completed_ok <= logged <= issued)
    print(f"  prediction log: {logged} rows; wrk completed {completed_ok} with 2xx and issued {issued} "
          f"(the difference was in flight when wrk stopped) -> {'PASS' if check.passed else 'FAIL'}")  # fmt: skip
    return check


# ------------------------------------------------------------------------------------------------------ mlflow


def package_version(python: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return run_step([str(python), "-c", code], env=dict(os.environ), log=LOGS / "version.txt", timeout=60).strip()


def ensure_mlflow_venv() -> Path:
    """bench/.mlflow-venv with MLflow 3 and the project's own scikit-learn, numpy, scipy and pandas versions."""
    python = MLFLOW_VENV / "bin" / "python"
    pins = [f"{name}=={package_version(PROJECT_PY, name)}" for name in PINNED]
    wanted = " ".join([MLFLOW_SPEC, *pins])
    stamp = MLFLOW_VENV / ".bench-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {wanted} into {MLFLOW_VENV.relative_to(REPO)} (once)", flush=True)
    env = dict(os.environ)
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        run_step([base, "-m", "venv", str(MLFLOW_VENV)], env=env, log=LOGS / "mlflow-venv.txt", timeout=300)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run_step([*pip, MLFLOW_SPEC, *pins], env=env, log=LOGS / "mlflow-pip.txt", timeout=1200)
    stamp.write_text(wanted)
    return python


def save_mlflow_models(python: Path) -> Path:
    out = WORK / "mlflow-models"
    cmd = [str(python), str(BENCH / "mlflow_models.py"), str(out)]
    print(indent(run_step(cmd, env=dict(os.environ), log=LOGS / "mlflow-models.txt", timeout=600)))
    return out


def mlflow_env(nodelay: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"  # MLflow execs `uvicorn` by name
    env.pop("PYTHONPATH", None)
    if nodelay:
        env["PYTHONPATH"] = str(NODELAY_DIR)
    return env


def smoke_mlflow(port: int, bodies: Path) -> None:
    body = bodies.read_text().splitlines()[0].encode()
    status, raw = http_request(port, "POST", "/invocations", body, {"Content-Type": "application/json"})
    if status != 200 or "predictions" not in json.loads(raw):
        raise BenchError(f"MLflow's /invocations answered {status}: {raw[:300]!r}")


def run_mlflow(nodelay: bool, models_dir: Path, bodies: Path, opts: Options, procs: Processes, report: Report) -> None:
    server = MLFLOW_NODELAY if nodelay else MLFLOW_SHIPPED
    for model in opts.models:
        port = free_port()
        cmd = [
            str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(models_dir / model),
            "--env-manager", "local", "-h", HOST, "-p", str(port), "--workers", "2",
        ]  # fmt: skip
        log = LOGS / f"{slug(server)}-{model}.txt"
        print(f"\n{server}: {model} on {HOST}:{port} (2 workers)", flush=True)
        proc = procs.start(cmd, env=mlflow_env(nodelay), log=log)
        try:
            wait_ready(proc, port, "/ping", log)
            smoke_mlflow(port, bodies)
            measured, _ = measure(Target(server, model, port, "/invocations", bodies), opts)
            report.runs.extend(measured)
        finally:
            procs.stop(proc, group=True, grace=20)


# ----------------------------------------------------------------------------------------------------- report


def find(report: Report, server: str, model: str, connections: int, workload: str = "cycle") -> Run | None:
    """The run, or with several (--rounds) one holding their medians (and the worst max)."""
    runs = [r for r in report.runs if (r.server, r.model, r.connections, r.workload) == (server, model, connections,
                                                                                         workload)]  # fmt: skip
    if len(runs) <= 1:
        return runs[0] if runs else None
    return replace(
        runs[0], rps=median(r.rps for r in runs), p50_ms=median(r.p50_ms for r in runs),
        p90_ms=median(r.p90_ms for r in runs), p99_ms=median(r.p99_ms for r in runs),
        max_ms=max(r.max_ms for r in runs),
        requests=sum(r.requests for r in runs), sent=sum(r.sent for r in runs), errors=sum(r.errors for r in runs),
    )  # fmt: skip


def cache_rows(report: Report, opts: Options) -> list[dict[str, Any]]:
    """Cache on against cache off, per model, workload and concurrency (medians of the rounds)."""
    rows = []
    for model in opts.models:
        for workload in opts.workloads:
            for connections in opts.connections:
                off = find(report, PLATFORM, model, connections, workload)
                on = find(report, PLATFORM_CACHED, model, connections, workload)
                if off is None or on is None:
                    continue
                rows.append({
                    "model": model, "workload": workload, "connections": connections, "rounds": opts.rounds,
                    "off_rps": off.rps, "on_rps": on.rps, "rps_ratio": on.rps / off.rps if off.rps else None,
                    "off_p99_ms": off.p99_ms, "on_p99_ms": on.p99_ms,
                })  # fmt: skip
    return rows


def best_mlflow(report: Report, model: str, connections: int) -> Run | None:
    runs = [find(report, s, model, connections) for s in (MLFLOW_SHIPPED, MLFLOW_NODELAY)]
    runs = [r for r in runs if r is not None]
    return max(runs, key=lambda r: r.rps, default=None)


def ratios(report: Report, opts: Options) -> list[dict[str, Any]]:
    rows = []
    for model in opts.models:
        for connections in opts.connections:
            ours, theirs = find(report, PLATFORM, model, connections), best_mlflow(report, model, connections)
            if ours is None or theirs is None:
                continue
            rows.append({
                "model": model, "connections": connections, "versus": theirs.server,
                "rps_ratio": ours.rps / theirs.rps if theirs.rps else None,
                "p50_ratio": ours.p50_ms / theirs.p50_ms if theirs.p50_ms else None,
                "p99_ratio": ours.p99_ms / theirs.p99_ms if theirs.p99_ms else None,
            })  # fmt: skip
    return rows


def target(name: str, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"target": name, "passed": passed, "detail": detail}


def targets(report: Report, opts: Options) -> list[dict[str, Any]]:
    """Each target with PASS/FAIL (None when this run did not measure what it needs)."""
    results = []
    for (model, connections), factor in RPS_TARGETS.items():
        ours, theirs = find(report, PLATFORM, model, connections), best_mlflow(report, model, connections)
        name = f"{model} c={connections}: req/s >= {factor}x best MLflow"
        if ours is None or theirs is None:
            results.append(target(name, None, "not measured"))
        else:
            detail = f"{ours.rps:.0f} vs {factor} x {theirs.rps:.0f} req/s"
            results.append(target(name, ours.rps >= factor * theirs.rps, detail))
    for model in MODELS:
        ours = find(report, PLATFORM, model, P99_TARGET_CONCURRENCY)
        name = f"{model} c={P99_TARGET_CONCURRENCY}: p99 < {P99_TARGET_MS:.0f} ms"
        if ours is None:
            results.append(target(name, None, "not measured"))
        else:
            results.append(target(name, ours.p99_ms < P99_TARGET_MS, f"{ours.p99_ms:.1f} ms"))
    for row in cache_rows(report, opts):
        factor = CACHE_TARGETS.get(row["workload"])
        if factor is not None and row["rps_ratio"] is not None:
            name = f"{row['model']} {row['workload']} c={row['connections']}: cache on >= {factor}x off"
            detail = f"{row['on_rps']:.0f} vs {row['off_rps']:.0f} req/s ({row['rps_ratio']:.2f}x)"
            results.append(target(name, row["rps_ratio"] >= factor, detail))
    results.extend(tail_targets(report, opts))
    platform_runs = [r for r in report.runs if r.server in (PLATFORM, PLATFORM_CACHED, PLATFORM_BEFORE)]
    errors = sum(r.errors for r in platform_runs)
    passed = None if not platform_runs else errors == 0
    results.append(target("zero errors (Modelworks, every measured run)", passed, f"{errors} errors"))
    for check in report.log_checks:
        detail = f"completed {check.completed_ok} <= logged {check.logged} <= issued {check.issued}"
        results.append(target(f"every prediction in the log ({check.server})", check.passed, detail))
    return results


def tree_memory_of(report: Report, server: str) -> Memory | None:
    """The median by RSS of the server's web-tree measurements (one per round)."""
    found = sorted((m for m in report.memory if m.server == server), key=lambda m: m.rss_mib)
    return found[len(found) // 2] if found else None


def tail_targets(report: Report, opts: Options) -> list[dict[str, Any]]:
    """Issue 18, item 7: p99 at c=8 against the bare Django view's, throughput against --before's, the web tree."""
    results = []
    for model in opts.models:
        ours, bare = (
            find(report, PLATFORM, model, BARE_P99_CONCURRENCY),
            find(report, BARE, model, BARE_P99_CONCURRENCY),
        )
        if ours is not None and bare is not None:
            name = f"{model} c={BARE_P99_CONCURRENCY}: p99 <= {BARE_P99_FACTOR:g}x the bare Django view's"
            detail = (
                f"{ours.p99_ms:.2f} vs {BARE_P99_FACTOR:g} x {bare.p99_ms:.2f} ms ({ours.p99_ms / bare.p99_ms:.2f}x)"
            )
            results.append(target(name, ours.p99_ms <= BARE_P99_FACTOR * bare.p99_ms, detail))
        for connections in opts.connections:
            ours, before = find(report, PLATFORM, model, connections), find(report, PLATFORM_BEFORE, model, connections)
            if ours is not None and before is not None:
                name = f"{model} c={connections}: req/s >= {BEFORE_RPS_FACTOR:g}x the code before"
                detail = f"{ours.rps:.0f} vs {before.rps:.0f} req/s ({ours.rps / before.rps:.2f}x)"
                results.append(target(name, ours.rps >= BEFORE_RPS_FACTOR * before.rps, detail))
    memory = tree_memory_of(report, PLATFORM)
    if memory is not None:
        limit = TREE_MEMORY_TARGET_MIB
        results.append(target(f"web tree PSS < {limit:.0f} MiB (master + workers, demo loaded)",
                              memory.pss_mib < limit, f"{memory.pss_mib:.0f} MiB"))  # fmt: skip
        results.append(target(f"web tree RSS summed < {limit:.0f} MiB (shared pages once per process)",
                              memory.rss_mib < limit, f"{memory.rss_mib:.0f} MiB"))  # fmt: skip
    return results


def comparison_rows(report: Report, opts: Options) -> list[dict[str, Any]]:
    """Bare Django, the code before and this code side by side (medians of the rounds), with their web trees."""
    rows = []
    for model in opts.models:
        for connections in opts.connections:
            for server in (BARE, PLATFORM_BEFORE, PLATFORM):
                run = find(report, server, model, connections)
                if run is None or server == PLATFORM and not (opts.bare or opts.before):
                    continue
                memory = tree_memory_of(report, f"{BARE} ({model})" if server == BARE else server)
                rows.append({
                    "server": server, "model": model, "connections": connections, "rounds": opts.rounds,
                    "rps": run.rps, "p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "max_ms": run.max_ms,
                    "tree_rss_mib": memory.rss_mib if memory else None,
                    "tree_pss_mib": memory.pss_mib if memory else None,
                })  # fmt: skip
    return rows


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def print_report(report: Report, opts: Options) -> None:
    print("\n" + "=" * 96)
    print(f"{'server':<24}{'model':<24}{'load':<8}{'conc':>5}{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for r in report.runs:
        print(f"{r.server:<24}{r.model:<24}{r.workload:<8}{r.connections:>5}{r.rps:>11.1f}{r.p50_ms:>10.2f}"
              f"{r.p99_ms:>10.2f}{r.errors:>8}")  # fmt: skip
    cached = cache_rows(report, opts)
    if cached:
        print(f"\ncache on / off (medians of {opts.rounds} round(s)){'':<6}{'off req/s':>11}{'on req/s':>11}"
              f"{'ratio':>9}{'off p99':>9}{'on p99':>9}")  # fmt: skip
        for row in cached:
            label = f"{row['model']} {row['workload']} c={row['connections']}"
            print(f"{label:<46}{row['off_rps']:>11.0f}{row['on_rps']:>11.0f}{fmt_ratio(row['rps_ratio']):>9}"
                  f"{row['off_p99_ms']:>9.2f}{row['on_p99_ms']:>9.2f}")  # fmt: skip
    compared = comparison_rows(report, opts)
    if compared:
        print(f"\nside by side (medians of {opts.rounds} round(s)){'':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'RSS MiB':>9}{'PSS MiB':>9}")  # fmt: skip
        for row in compared:
            label = f"{row['server']} {row['model']} c={row['connections']}"
            rss = "-" if row["tree_rss_mib"] is None else f"{row['tree_rss_mib']:.0f}"
            pss = "-" if row["tree_pss_mib"] is None else f"{row['tree_pss_mib']:.0f}"
            print(f"{label:<50}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{rss:>9}{pss:>9}")
    rows = ratios(report, opts)
    if rows:
        print(f"\nModelworks / best MLflow{'':<16}{'req/s':>10}{'p50':>10}{'p99':>10}   (best = higher req/s)")
        for row in rows:
            label = f"{row['model']} c={row['connections']}"
            print(f"{label:<40}{fmt_ratio(row['rps_ratio'])}{fmt_ratio(row['p50_ratio'])}"
                  f"{fmt_ratio(row['p99_ratio'])}   vs {row['versus']}")  # fmt: skip
    print("\ntargets")
    for t in targets(report, opts):
        print(f"  {verdict(t['passed']):<5} {t['target']:<58} {t['detail']}")
    for problem in report.problems:
        print(f"  ERROR {problem}")


def fmt_ratio(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>9.2f}x"


def write_json(report: Report, opts: Options) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"serving-{report.started_at.replace(':', '').replace('-', '')}.json"
    data = asdict(report)
    data["ratios"] = ratios(report, opts)
    data["cache"] = cache_rows(report, opts)
    data["side_by_side"] = comparison_rows(report, opts)
    data["targets"] = targets(report, opts)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# -------------------------------------------------------------------------------------------------------- main


def cpu_busy(seconds: float = 2.0) -> float:
    """The share of CPU time not idle over `seconds`, from /proc/stat (0 where it cannot be read)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def wrk_version() -> str:
    """wrk has no version flag: its usage text (exit status 1) starts with the version."""
    result = subprocess.run([wrk_binary(), "--version"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    return (result.stdout or result.stderr).splitlines()[0].strip()


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "wrk": wrk_version()}
    for name in ("scikit-learn", "numpy", "pandas", "django", "gunicorn"):
        env[f"project {name}"] = package_version(PROJECT_PY, name)
    return env


def benchmark(opts: Options, report: Report, procs: Processes) -> None:
    bodies = write_bodies(test_rows())
    report.environment.update(environment())
    busy = cpu_busy()
    report.environment["cpu_busy_before"] = round(busy, 3)
    if busy > 0.2:
        print(f"warning: something else is using {busy:.0%} of the CPUs before the run; figures will be noisy")
    if opts.platform:
        try:
            print("Modelworks: fresh database, migrate, seed_demo, create_api_key", flush=True)
            key = prepare_platform()
            for number in range(opts.rounds):
                arms = [lambda: run_bare(bodies["platform"], opts, procs, report)] if opts.bare else []
                if opts.before:
                    arms.append(lambda: run_platform(False, key, bodies["platform"], opts, procs, report,
                                                     Path(opts.before)))  # fmt: skip
                for cache in (False, True) if opts.cache_run else (False,):
                    arms.append(lambda cache=cache: run_platform(cache, key, bodies["platform"], opts, procs, report))
                # Every other round in the reverse order, so that a load rising or falling during the run (other
                # jobs on the machine) does not favour the arm that always comes first.
                for arm in arms if number % 2 == 0 else reversed(arms):
                    arm()
        except BenchError as exc:
            report.problems.append(f"Modelworks: {exc}")
            print(f"Modelworks: {exc}", file=sys.stderr)
    if opts.mlflow:
        try:
            python = ensure_mlflow_venv()
            report.environment["mlflow"] = package_version(python, "mlflow")
            models_dir = save_mlflow_models(python)
            for nodelay in (False, True):
                run_mlflow(nodelay, models_dir, bodies["mlflow"], opts, procs, report)
        except BenchError as exc:
            report.problems.append(f"MLflow: {exc}")
            print(f"MLflow: {exc}", file=sys.stderr)


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = Report(started_at=started, options=asdict(opts))
    procs = Processes()
    try:
        benchmark(opts, report, procs)
    except BenchError as exc:
        report.problems.append(str(exc))
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted: stopping every process this benchmark started", file=sys.stderr)
        procs.stop_all()
        return 130
    finally:
        procs.stop_all()
    report.environment["loadavg_at_end"] = os.getloadavg()
    print_report(report, opts)
    print(f"\nresults: {write_json(report, opts).relative_to(REPO)}; logs: {LOGS.relative_to(REPO)}/")
    failed = report.problems or any(t["passed"] is False for t in targets(report, opts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
