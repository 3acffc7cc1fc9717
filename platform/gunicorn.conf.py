# Gunicorn settings for the web process (used by `make run`, the benchmark and the container image), which serves
# config.asgi:application. Each worker runs uvicorn's event loop (uvloop + httptools): prediction requests are
# answered in rounds by one request-processor thread per worker, one model call per version for all the requests of a
# round (serving/front.py says why); every other request runs Django's WSGI handler on a pool of GUNICORN_THREADS
# threads (config/asgi.py).
import os
import shutil

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
wsgi_app = "config.asgi:application"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "config.web_worker.BalancedUvicornWorker"  # uvicorn's, keeping connections spread evenly
# Slow and idle clients (config/web_worker.py): an idle connection is closed after `keepalive` seconds (a new one
# too), a request's headers must arrive within GUNICORN_HEADER_TIMEOUT (10 s) and its body within
# GUNICORN_BODY_TIMEOUT (30 s) or at GUNICORN_BODY_MIN_RATE bytes/s (100 kB/s) on average, else 408; headers over
# GUNICORN_MAX_HEADER_BYTES (64 KiB) get 431. Beyond `worker_connections` connections per worker, requests are
# answered 503. A proxy keeping idle connections to gunicorn must close them sooner than `keepalive`
# (platform/nginx/modelworks.conf: 4 s).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# After SIGTERM: requests in flight get up to this less 6 s, the prediction log's last flush up to 5 s, then the
# master SIGKILLs what is left (config/web_worker.py).
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
# Django and every library the workers use (scikit-learn, numpy, pandas, DRF: about 270 MiB a process) are imported
# once, in the master, before it forks, so the workers share those pages instead of holding a copy each
# (docs/performance.md, issue 18). What belongs to one worker still starts in it: its models and OOD profiles
# (post_worker_init), database and Redis connections, threads and the request processor (on first use).
preload_app = os.environ.get("GUNICORN_PRELOAD", "1") == "1"

# Prometheus metrics from every worker, merged at scrape time (prometheus_client's multiprocess mode).
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(os.environ.get("MODELWORKS_VAR_DIR", "var"), "prometheus")
)
# The master's import of the application (preload_app) defines the metrics, before on_starting runs; their files
# need the directory. on_starting then starts it afresh: the workers write their own files after the fork
# (prometheus_client opens new ones in a process whose pid changed), the master none.
os.makedirs(_metrics_dir, exist_ok=True)


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def when_ready(server):
    # The master imported the application (preload_app) and is about to fork the workers. No database connection
    # may cross the fork (the import opens none; this makes sure). Then the garbage collector is told to leave what
    # exists now alone: its passes write to every object they walk, which would copy the shared pages into each
    # worker.
    if not preload_app:
        return
    import gc

    from django.db import connections

    connections.close_all()
    gc.collect()
    gc.freeze()


def post_worker_init(worker):
    # Load every production model before this worker takes traffic.
    from serving.warmup import load_production_models

    load_production_models()

    # Everything loaded so far (Django, models) lives as long as the worker: keep it out of the garbage collector's
    # full passes, which otherwise walk it every so often and stall requests for tens of milliseconds.
    import gc

    gc.collect()
    gc.freeze()


def worker_exit(server, worker):
    # A clean stop (SIGTERM, SIGINT, SIGQUIT: config/web_worker.py says how the worker gets here) lets the request
    # processor finish what it holds, then writes the rest of the prediction log and the experiment exposures, within
    # the worker's exit budget: what the database cannot take by then goes to the dead-letter file.
    import time

    from experiments.exposures import exposure_buffer
    from serving.front import request_processor
    from serving.prediction_log import prediction_log

    deadline = time.monotonic() + getattr(worker, "exit_seconds", 5.0)
    request_processor().close_connections(timeout=1.0)
    prediction_log().close(timeout=max(deadline - time.monotonic(), 0.1))
    exposure_buffer().close(timeout=max(deadline - time.monotonic(), 0.1))


def child_exit(server, worker):
    # In the master, for every worker gone, however it went (a SIGKILL at the timeout, the OOM killer too): its
    # live gauges leave the merged /metrics.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
