"""Modelworks settings: one file, every value from the environment (see README "Configuration").

With nothing set, the platform runs embedded: SQLite under var/, a local-memory cache and a Celery broker on the
filesystem, so `make run` needs no Postgres and no Redis. DATABASE_URL and REDIS_URL switch to the real services.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.env import env_bool, env_duration, env_int, env_list, env_secret, env_str, load_env_file
from config.schedules import every

BASE_DIR = Path(__file__).resolve().parent.parent
# `make run` leaves the embedded default's local settings (DEBUG=1, the DATABASE_URL/REDIS_URL it ran with) in
# var/local.env, so `python manage.py ...` in another shell of this clone finds them with nothing exported. Variables
# really set in the environment win. A deployment has no such file, and without it nothing changes (DEBUG off,
# SECRET_KEY required).
LOCAL_ENV_FILE = Path(env_str("MODELWORKS_VAR_DIR", str(BASE_DIR / "var"))) / "local.env"
load_env_file(LOCAL_ENV_FILE)
VAR_DIR = Path(env_str("MODELWORKS_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


# Values shipped in templates (.env.example, the Kubernetes Secret) and other well-known ones: a deployment that kept
# one would sign sessions and password resets with a key anyone can read.
PLACEHOLDER_SECRETS = ("change-me", "changeme", "django-insecure-", "secret", "your-secret", "replace-me", "xxx")


def placeholder_problem(name: str, value: str) -> str | None:
    lowered = value.strip().lower()
    if any(lowered.startswith(p) for p in PLACEHOLDER_SECRETS) or len(set(lowered)) < 5:
        return (
            f"{name} is a placeholder ({value[:12]!r}...): set a long random value, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    return None


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        if not DEBUG and (problem := placeholder_problem("SECRET_KEY", key)):
            raise ImproperlyConfigured(problem)
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (or point SECRET_KEY_FILE at it)")
    # Local use only: a random key generated once and kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "config.apps.ConsoleAdminConfig",  # django.contrib.admin with the console's home page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",  # users' API tokens: stored hashed, expiring (serving/tokens.py)
    "axes",  # failed logins: lockout of the admin login and the token endpoint (config/lockout.py)
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "registry",
    "serving",
    "features",
    "rollouts",
    "experiments",
    "monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security_headers.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.request_id.RequestIdMiddleware",  # before anything that may record an audit entry
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.forgiving_urls.ForgivingUrlsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a lockout into config/lockout.py's answer
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'modelworks.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
# Which kind of process this is. Web processes (gunicorn/uvicorn, or MODELWORKS_PROCESS=web) bound every statement and
# lock wait, so no request thread waits on the database without end; Celery workers, migrations and management
# commands run long statements by design and keep the server's defaults. The statement bound is gunicorn's request
# timeout (30 s), not less: admin pages over a large log are slow but legitimate, while the prediction path never
# waits on a statement at all (routes and credentials are read off its thread, serving/routing.py).
MODELWORKS_PROCESS = env_str("MODELWORKS_PROCESS", "web" if {"gunicorn", "uvicorn"} & sys.modules.keys() else "other")
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT_S", 3))
    if MODELWORKS_PROCESS == "web":
        # A connection whose peer vanished (a partition, a failover) fails within seconds, not the kernel's ~15 min:
        # the server-side timeouts below cannot fire when the server is not there.
        _db_options.setdefault("keepalives", 1)
        _db_options.setdefault("keepalives_idle", 10)
        _db_options.setdefault("keepalives_interval", 5)
        _db_options.setdefault("keepalives_count", 3)
        _db_options.setdefault("tcp_user_timeout", env_int("DB_TCP_USER_TIMEOUT_MS", 15000))
        _db_options["options"] = " ".join(filter(None, [
            _db_options.get("options", ""),
            f"-c statement_timeout={env_int('DB_STATEMENT_TIMEOUT_MS', 30000)}",
            f"-c lock_timeout={env_int('DB_LOCK_TIMEOUT_MS', 3000)}",
        ]))  # fmt: skip
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default: web, worker and beat are separate processes writing one file. WAL lets readers run
    # beside the writer; a writer waits for the lock up to the timeout instead of failing at once ("database is
    # locked"); IMMEDIATE takes the write lock when a transaction begins, so two transactions that read and then
    # write queue on the busy timeout instead of one failing when it upgrades its lock.
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    _db_options.setdefault("timeout", env_int("SQLITE_BUSY_TIMEOUT_S", 30))
    _db_options.setdefault("transaction_mode", "IMMEDIATE")
    _db_options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
# The few reads a user asks for and waits on (a drift report, training data) lift that bound for their own
# transaction to this (config/db.py).
DB_LONG_STATEMENT_TIMEOUT_MS = env_int("DB_LONG_STATEMENT_TIMEOUT_MS", 10 * 60 * 1000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery: Redis when REDIS_URL is set, embedded otherwise ---------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# Every Redis client on the request path (cache, throttle, feature store) gives up after these: Redis answers in well
# under a millisecond, so in a web process a call this slow means Redis is hung and the request carries on without
# it. Workers (bulk feature writes) get longer.
REDIS_CLIENT_OPTIONS = {
    "socket_timeout": env_int("REDIS_SOCKET_TIMEOUT_MS", 100 if MODELWORKS_PROCESS == "web" else 5000) / 1000,
    "socket_connect_timeout": env_int("REDIS_CONNECT_TIMEOUT_MS", 250) / 1000,
}
# After a failed cache call the process skips Redis this long (doubling while it keeps failing, up to 8x), so a
# Redis outage costs one timeout per back-off rather than one per request (config/cache.py).
MODELWORKS_CACHE_BACKOFF_MS = env_int("MODELWORKS_CACHE_BACKOFF_MS", 1000)
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "config.cache.PooledRedisCache", "LOCATION": REDIS_URL, "OPTIONS": REDIS_CLIENT_OPTIONS}
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    if MODELWORKS_PROCESS == "web":
        # A web process queues tasks inside requests: a hung or down broker must cost a request a bounded wait (then
        # a 503, config/queueing.py), never a hang. Connect and each command are bounded, a failed publish is tried
        # once more, the result backend is bounded the same way and not subscribed to per queued task.
        # Workers and beat keep kombu's defaults: their waits on the broker are long by design.
        _broker_timeout_s = env_int("CELERY_WEB_BROKER_TIMEOUT_MS", 500) / 1000
        CELERY_BROKER_CONNECTION_TIMEOUT = _broker_timeout_s
        CELERY_BROKER_TRANSPORT_OPTIONS = {
            "socket_timeout": _broker_timeout_s, "socket_connect_timeout": _broker_timeout_s, "max_retries": 1,
        }  # fmt: skip
        CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1,
                                            "interval_max": 0.1}  # fmt: skip
        CELERY_RESULT_BACKEND = f"config.queueing:WebRedisBackend+{REDIS_URL}"  # no subscription per queued task
        CELERY_REDIS_SOCKET_TIMEOUT = _broker_timeout_s
        CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = _broker_timeout_s
        CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
            "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
        }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    _broker_dir = VAR_DIR / "celery"
    for _sub in ("queue", "control", "results"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
    }
    CELERY_RESULT_BACKEND = f"file://{_broker_dir / 'results'}"

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# One queue name for web, worker and beat; separate deployments (or tests) sharing a broker can each pick their own.
CELERY_TASK_DEFAULT_QUEUE = env_str("MODELWORKS_CELERY_QUEUE", "celery")
# What a worker started without -Q consumes: the default queue and the asynchronous predictions' (set below, in
# the serving section).
CELERY_TASK_QUEUES = [Queue(CELERY_TASK_DEFAULT_QUEUE)]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# One schedule for the whole platform; every entry says why it exists and expires so a backlog never piles up.
# `every` makes a period of an hour or more a crontab (config/schedules.py): the state file of beat is on an
# emptyDir, and an hourly interval would restart its hour at every beat restart.
CELERY_BEAT_SCHEDULE = {
    # --- features (issue 5) ---
    # Values ingested in batch reach the online store only by materialization: copy what was created since the
    # last run, often enough that the online store lags the offline one by minutes at most.
    "features-materialize": {
        "task": "features.materialize_all",
        "schedule": every(
            env_int("MODELWORKS_FEATURES_MATERIALIZE_EVERY_S", 300), name="MODELWORKS_FEATURES_MATERIALIZE_EVERY_S"
        ),
        "options": {"expires": 240},
    },
    # --- end features ---
    # Storage can be changed behind our back (bucket edits, disk faults): re-hash every artifact hourly (at minute 0)
    # so a tampered model is marked before anyone tries to serve it.
    "registry-verify-artifacts": {
        "task": "registry.verify_all_artifacts",
        "schedule": every(
            env_int("MODELWORKS_VERIFY_ARTIFACTS_EVERY_S", 3600), name="MODELWORKS_VERIFY_ARTIFACTS_EVERY_S"
        ),
        "options": {"expires": 1800},
    },
    # The audit trail keeps MODELWORKS_AUDIT_RETENTION_DAYS; older entries go once a day (00:17 UTC).
    "registry-prune-audit": {
        "task": "registry.prune_audit",
        "schedule": every(24 * 3600, name="MODELWORKS_AUDIT_PRUNE", minute=17),
        "options": {"expires": 3600},
    },
    # Rollouts are a state machine in the database; this tick moves each due one on by a step (rollouts/services.py).
    "rollouts-rollout-tick": {
        "task": "rollouts.rollout_tick",
        "schedule": every(env_int("MODELWORKS_ROLLOUT_TICK_MS", 5000) / 1000, name="MODELWORKS_ROLLOUT_TICK_MS"),
        "options": {"expires": 30},
    },
}

# --- Artifact storage ---------------------------------------------------------------------------------------------
ARTIFACT_STORAGE = env_str("ARTIFACT_STORAGE", "local")
if ARTIFACT_STORAGE == "local":
    _artifacts = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts"))},
    }
elif ARTIFACT_STORAGE == "s3":
    _artifacts = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("ARTIFACT_S3_BUCKET"),
            "endpoint_url": env_str("ARTIFACT_S3_ENDPOINT_URL") or None,
            "region_name": env_str("ARTIFACT_S3_REGION") or None,
            "location": env_str("ARTIFACT_PREFIX", "modelworks"),
            "file_overwrite": False,
        },
    }
elif ARTIFACT_STORAGE == "azure":
    _artifacts = {
        "BACKEND": "storages.backends.azure_storage.AzureStorage",
        "OPTIONS": {
            "azure_container": env_str("ARTIFACT_AZURE_CONTAINER"),
            "connection_string": env_secret("ARTIFACT_AZURE_CONNECTION_STRING"),
            "location": env_str("ARTIFACT_PREFIX", "modelworks"),
            "overwrite_files": False,
        },
    }
else:
    raise ImproperlyConfigured(f"ARTIFACT_STORAGE={ARTIFACT_STORAGE!r}: use local, s3 or azure")

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": _artifacts,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Platform limits and trust ------------------------------------------------------------------------------------
# Pickle runs arbitrary code when loaded: joblib/pickle artifacts are refused unless the deployment opts in.
MODELWORKS_TRUST_PICKLE = env_bool("MODELWORKS_TRUST_PICKLE", False)
MODELWORKS_MAX_ARTIFACT_MB = env_int("MODELWORKS_MAX_ARTIFACT_MB", 200)
MODELWORKS_MAX_EVAL_ROWS = env_int("MODELWORKS_MAX_EVAL_ROWS", 1_000_000)
# Types beyond skops' own defaults and our allow-list (registry/artifacts.py) that this deployment trusts.
MODELWORKS_SKOPS_TRUSTED_TYPES = env_list("MODELWORKS_SKOPS_TRUSTED_TYPES", [])
# An uploaded skops/ONNX file is first loaded in a worker process (registry/sandbox.py) with these limits; a skops
# archive whose members declare more than the unpacked limit is refused before anything inflates it.
MODELWORKS_MAX_ARTIFACT_UNPACKED_MB = env_int("MODELWORKS_MAX_ARTIFACT_UNPACKED_MB", 4 * MODELWORKS_MAX_ARTIFACT_MB)
MODELWORKS_ARTIFACT_CHECK_MEMORY_MB = env_int("MODELWORKS_ARTIFACT_CHECK_MEMORY_MB", 2048)
MODELWORKS_ARTIFACT_CHECK_SECONDS = env_int("MODELWORKS_ARTIFACT_CHECK_SECONDS", 60)

# ONNX conversion (registry/optimisation.py): how close the converted model must answer on the evaluation set
# (labels always identical), how long a conversion may take in the worker, and which onnxruntime providers sessions
# use (empty: CUDA when onnxruntime has it, else the CPU; the CPU is always last).
MODELWORKS_ONNX_PARITY_PROBA_ATOL = float(env_str("MODELWORKS_ONNX_PARITY_PROBA_ATOL", "1e-5"))
MODELWORKS_ONNX_PARITY_RTOL = float(env_str("MODELWORKS_ONNX_PARITY_RTOL", "1e-6"))
MODELWORKS_ONNX_TIMING_MS = env_int("MODELWORKS_ONNX_TIMING_MS", 250)  # per runtime and batch size
MODELWORKS_ONNX_CONVERT_SECONDS = env_int("MODELWORKS_ONNX_CONVERT_SECONDS", 600)
MODELWORKS_ONNX_PROVIDERS = env_list("MODELWORKS_ONNX_PROVIDERS", [])

# `manage.py backup` / `restore` (config/backup.py): how long pg_dump or pg_restore may run.
MODELWORKS_BACKUP_TIMEOUT_S = env_int("MODELWORKS_BACKUP_TIMEOUT_S", 3600)

# The audit trail (registry/audit.py) keeps this many days; 0 keeps it for ever.
MODELWORKS_AUDIT_RETENTION_DAYS = env_int("MODELWORKS_AUDIT_RETENTION_DAYS", 365)

# --- Serving (see README "Serving") ------------------------------------------------------------------------------
MODELWORKS_MAX_BATCH = env_int("MODELWORKS_MAX_BATCH", 1000)
MODELWORKS_MAX_BODY_MB = env_int("MODELWORKS_MAX_BODY_MB", 10)
DATA_UPLOAD_MAX_MEMORY_SIZE = MODELWORKS_MAX_BODY_MB * 1024 * 1024
MODELWORKS_BATCH_MAX_ROWS = env_int("MODELWORKS_BATCH_MAX_ROWS", 64)
MODELWORKS_MODEL_CACHE_MB = env_int("MODELWORKS_MODEL_CACHE_MB", 1024)
MODELWORKS_ROUTE_TTL_MS = env_int("MODELWORKS_ROUTE_TTL_MS", 500)
# While the database is away, routes last read from it keep serving for this long (serving/routing.py); past it,
# requests with nothing fresher answer 503.
MODELWORKS_ROUTE_MAX_STALE_SECONDS = env_int("MODELWORKS_ROUTE_MAX_STALE_SECONDS", 300)
# How long the request processor waits for a route read it started before serving the last good route (or, with
# none, a 503): a hung database costs it this once, not the whole hang.
MODELWORKS_ROUTE_WAIT_MS = env_int("MODELWORKS_ROUTE_WAIT_MS", 250)
# A version that fails to load is tried again after this back-off, doubling per failure up to the maximum.
MODELWORKS_MODEL_RETRY_S = env_int("MODELWORKS_MODEL_RETRY_S", 30)
MODELWORKS_MODEL_RETRY_MAX_S = env_int("MODELWORKS_MODEL_RETRY_MAX_S", 300)
# /readyz answers within this budget even when Redis or Postgres hangs (the probe's timeout is 3 s).
MODELWORKS_READYZ_BUDGET_MS = env_int("MODELWORKS_READYZ_BUDGET_MS", 800)
MODELWORKS_PREDICTION_CACHE = env_bool("MODELWORKS_PREDICTION_CACHE", True)
# The prediction cache's two levels (serving/prediction_cache.py): this process's LRU, bounded by bytes, holding an
# entry read from Redis for at most the local TTL (what it stores itself, for the policy's TTL); and Redis, whose
# calls give up after the timeout (a slow Redis turns hits into misses) and are skipped for MODELWORKS_CACHE_BACKOFF_MS.
MODELWORKS_PREDICTION_CACHE_LOCAL_MB = env_int("MODELWORKS_PREDICTION_CACHE_LOCAL_MB", 32)
MODELWORKS_PREDICTION_CACHE_LOCAL_TTL_S = env_int("MODELWORKS_PREDICTION_CACHE_LOCAL_TTL_S", 60)
MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS = env_int("MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS", 20)
# While Redis has answered almost none of the keys asked lately, only one lookup in this many asks it.
MODELWORKS_PREDICTION_CACHE_PROBE_EVERY = env_int("MODELWORKS_PREDICTION_CACHE_PROBE_EVERY", 16)
# Score each request's rows against its version's out-of-distribution profile (monitoring/ood.py), when it has one.
MODELWORKS_OOD_SCORING = env_bool("MODELWORKS_OOD_SCORING", True)
# How long a process uses a version's OOD profile before reading it again (a changed profile reaches every pod).
MODELWORKS_OOD_PROFILE_TTL_S = env_int("MODELWORKS_OOD_PROFILE_TTL_S", 30)
# The model MLflow's `POST /invocations` scores (serving/mlflow.py); empty: the only registered model.
MODELWORKS_DEFAULT_MODEL = env_str("MODELWORKS_DEFAULT_MODEL", "")
MODELWORKS_LOG_FLUSH_MS = env_int("MODELWORKS_LOG_FLUSH_MS", 50)
MODELWORKS_LOG_BUFFER_MAX = env_int("MODELWORKS_LOG_BUFFER_MAX", 200_000)
# The same buffer capped by an estimate of its memory (a few wide batch requests must not take the worker's RAM).
MODELWORKS_LOG_BUFFER_MAX_BYTES = env_int("MODELWORKS_LOG_BUFFER_MAX_BYTES", 256 * 1024 * 1024)
# A request with the same id, model, outcome and inputs within this window is a retry and is logged once.
MODELWORKS_LOG_RETRY_WINDOW_S = env_int("MODELWORKS_LOG_RETRY_WINDOW_S", 300)
# The log is partitioned by UTC day on Postgres (serving/partitions.py): beat keeps this many days' partitions ready.
MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS = env_int("MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS", 3)
# Rows the database refuses for their content go to serving_deadletter, or here as JSON lines when it is away.
MODELWORKS_DEAD_LETTER_DIR = env_str("MODELWORKS_DEAD_LETTER_DIR", str(VAR_DIR / "dead-letters"))
# Each of those files (one per source) stops growing at this size; rows past it are dropped and counted.
MODELWORKS_DEAD_LETTER_FILE_MAX_MB = env_int("MODELWORKS_DEAD_LETTER_FILE_MAX_MB", 100)
# Keyed hash for features tagged pii in a signature before they reach the prediction log.
MODELWORKS_PII_HASH_KEY = env_secret("MODELWORKS_PII_HASH_KEY") or f"pii:{SECRET_KEY}"
# Store routing keys as their keyed hash (the same key) in the log, feedback, business events and exposures: joins
# still work and the clear key is never at rest (registry/subjects.py). Erasure finds rows under either form.
MODELWORKS_HASH_ROUTING_KEYS = env_bool("MODELWORKS_HASH_ROUTING_KEYS", False)
# Asynchronous predictions (README "Asynchronous predictions"): run by Celery on a queue of their own, so a backlog
# of them never delays the platform's own tasks. Every worker started without -Q consumes it too (CELERY_TASK_QUEUES
# below); a deployment can give it dedicated workers with `-Q predictions`.
MODELWORKS_ASYNC_QUEUE = env_str("MODELWORKS_ASYNC_QUEUE", "predictions")
# A result (and the request's inputs) is kept this long after it is ready, then answers 410 and is deleted by beat.
MODELWORKS_ASYNC_RESULT_TTL_S = env_int("MODELWORKS_ASYNC_RESULT_TTL_S", 24 * 3600)
# A request still queued this long after it was sent is not run: it fails with a 503 the caller can retry.
MODELWORKS_ASYNC_QUEUE_TIMEOUT_S = env_int("MODELWORKS_ASYNC_QUEUE_TIMEOUT_S", 600)
# One run's limits (the model's own inference budget applies inside them, as on the synchronous path).
MODELWORKS_ASYNC_TIME_LIMIT_S = env_int("MODELWORKS_ASYNC_TIME_LIMIT_S", 60)
CELERY_TASK_QUEUES.append(Queue(MODELWORKS_ASYNC_QUEUE))

# --- Feature store (see README "Feature store") -------------------------------------------------------------------
# "redis" needs REDIS_URL; "database" keeps the latest values in a table (the embedded default, one process or many).
MODELWORKS_FEATURES_ONLINE_STORE = env_str("MODELWORKS_FEATURES_ONLINE_STORE", "redis" if REDIS_URL else "database")
if MODELWORKS_FEATURES_ONLINE_STORE not in ("redis", "database") or (
    MODELWORKS_FEATURES_ONLINE_STORE == "redis" and not REDIS_URL
):
    raise ImproperlyConfigured("MODELWORKS_FEATURES_ONLINE_STORE must be 'database', or 'redis' with REDIS_URL set")
# A pushed row may be stamped this far in the future (clock skew between producers and us), no further.
MODELWORKS_FEATURES_FUTURE_TOLERANCE_S = env_int("MODELWORKS_FEATURES_FUTURE_TOLERANCE_S", 300)
# Incremental materialization stops this far behind now, so rows of transactions still committing are not skipped.
MODELWORKS_FEATURES_MATERIALIZE_LAG_S = env_int("MODELWORKS_FEATURES_MATERIALIZE_LAG_S", 5)
# Modules imported at startup that register on-demand feature functions (features/on_demand.py).
MODELWORKS_FEATURE_MODULES = env_list("MODELWORKS_FEATURE_MODULES", ["features.demo"])
MODELWORKS_FEATURES_MAX_ROWS = env_int("MODELWORKS_FEATURES_MAX_ROWS", 10_000)

# --- Experiments (see README "Experiments") ----------------------------------------------------------------------
# First exposures are buffered per process and written in bulk this often; past the cap new keys wait for a later
# request (the database is away) rather than growing memory.
MODELWORKS_EXPOSURE_FLUSH_MS = env_int("MODELWORKS_EXPOSURE_FLUSH_MS", 1000)
MODELWORKS_EXPOSURE_BUFFER_MAX = env_int("MODELWORKS_EXPOSURE_BUFFER_MAX", 100_000)
# --- end experiments ----------------------------------------------------------------------------------------------

# --- Monitoring (see README "Monitoring") ---------------------------------------------------------------------
# Feedback given by routing key + time joins the latest prediction for that key made this long before it.
MODELWORKS_FEEDBACK_MATCH_WINDOW_S = env_int("MODELWORKS_FEEDBACK_MATCH_WINDOW_S", 7 * 24 * 3600)
# Alert webhooks: this many attempts, the n-th failure waiting BACKOFF * 2**(n-1) in the queue (Celery's retry with
# a countdown: no worker waits), so 5 attempts over about 75 s by default.
MODELWORKS_WEBHOOK_ATTEMPTS = env_int("MODELWORKS_WEBHOOK_ATTEMPTS", 5)
MODELWORKS_WEBHOOK_BACKOFF_MS = env_int("MODELWORKS_WEBHOOK_BACKOFF_MS", 5000)
# Webhooks (alerts, registry and rollout events) never go to loopback, private, link-local (cloud metadata), reserved
# or multicast addresses, checked at save and at every delivery, unless one of these networks (comma-separated CIDRs,
# e.g. "10.20.0.0/16,127.0.0.1/32") holds the address. Empty by default. Names resolve within the DNS timeout.
MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = env_list("MODELWORKS_WEBHOOK_ALLOWED_NETWORKS", [])
for _cidr in MODELWORKS_WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_cidr, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"MODELWORKS_WEBHOOK_ALLOWED_NETWORKS: {_cidr!r} is not a network: {_exc}") from None
MODELWORKS_WEBHOOK_DNS_TIMEOUT_S = env_int("MODELWORKS_WEBHOOK_DNS_TIMEOUT_S", 2)
CELERY_BEAT_SCHEDULE.update(
    {
        # Each monitor has its own interval; this tick queues the ones that are due (claimed once each).
        "monitoring-run-due-monitors": {
            "task": "monitoring.run_due_monitors",
            "schedule": every(env_int("MODELWORKS_MONITOR_TICK_S", 60), name="MODELWORKS_MONITOR_TICK_S"),
            "options": {"expires": 50},
        },
        # The console's traffic charts read a per-minute rollup of the prediction log (monitoring/traffic.py).
        "monitoring-rollup-traffic": {
            "task": "monitoring.rollup_traffic",
            "schedule": every(60, name="MODELWORKS_TRAFFIC_ROLLUP_S"),
            "options": {"expires": 50},
        },
        # Feedback that arrived before its prediction was logged (or by routing key) gets its model and version.
        "monitoring-join-feedback": {
            "task": "monitoring.join_feedback",
            "schedule": every(
                env_int("MODELWORKS_FEEDBACK_JOIN_EVERY_S", 300), name="MODELWORKS_FEEDBACK_JOIN_EVERY_S"
            ),
            "options": {"expires": 240},
        },
    }
)
# --- end monitoring ---

# --- Batch scoring (README "Batch scoring") ---------------------------------------------------------------------
# Jobs run on their own queue, so a worker Deployment for batch scales apart from the one for housekeeping tasks.
MODELWORKS_BATCH_QUEUE = env_str("MODELWORKS_BATCH_QUEUE", "batch")
MODELWORKS_BATCH_CHUNK_ROWS = env_int("MODELWORKS_BATCH_CHUNK_ROWS", 100_000)
MODELWORKS_BATCH_PARALLELISM = env_int("MODELWORKS_BATCH_PARALLELISM", 8)
MODELWORKS_BATCH_MAX_REJECT_SHARE = float(env_str("MODELWORKS_BATCH_MAX_REJECT_SHARE", "0.01"))
# A claimed chunk is its worker's this long: also the chunk task's hard time limit, so a chunk still claimed after
# its lease belongs to a dead worker and is claimed again.
MODELWORKS_BATCH_CHUNK_LEASE_S = env_int("MODELWORKS_BATCH_CHUNK_LEASE_S", 900)
# A runner scores chunk after chunk for this long before it queues the next runner and lets other tasks have the worker.
MODELWORKS_BATCH_RUNNER_S = env_int("MODELWORKS_BATCH_RUNNER_S", 30)
# Threads a batch worker process lets BLAS/OpenMP use for a model call: its worker processes are the parallelism.
MODELWORKS_BATCH_THREADS = env_int("MODELWORKS_BATCH_THREADS", 1)
MODELWORKS_BATCH_IO_TIMEOUT_S = env_int("MODELWORKS_BATCH_IO_TIMEOUT_S", 30)
MODELWORKS_BATCH_LOCAL_ROOTS = env_list("MODELWORKS_BATCH_LOCAL_ROOTS", [str(VAR_DIR / "batch")])
MODELWORKS_BATCH_S3_ENDPOINT_URL = env_str("MODELWORKS_BATCH_S3_ENDPOINT_URL")
MODELWORKS_BATCH_S3_REGION = env_str("MODELWORKS_BATCH_S3_REGION")
MODELWORKS_BATCH_AZURE_ACCOUNT_NAME = env_str("MODELWORKS_BATCH_AZURE_ACCOUNT_NAME")
MODELWORKS_BATCH_AZURE_ACCOUNT_KEY = env_secret("MODELWORKS_BATCH_AZURE_ACCOUNT_KEY")
CELERY_BEAT_SCHEDULE.update(
    {
        # A job whose workers all died has nobody to claim its chunks again: once a minute, jobs with claimable
        # chunks get runners and jobs whose chunks are all done get their manifest (serving/batch.py).
        "serving-batch-watchdog": {
            "task": "serving.batch_watchdog",
            "schedule": every(env_int("MODELWORKS_BATCH_WATCHDOG_S", 60), name="MODELWORKS_BATCH_WATCHDOG_S"),
            "options": {"expires": 50},
        },
        # Scheduled batch jobs (BatchSchedule rows, each with its cron): this tick starts the due ones, once each.
        "serving-batch-schedules": {
            "task": "serving.batch_run_due_schedules",
            "schedule": every(60, name="MODELWORKS_BATCH_SCHEDULE_TICK_S"),
            "options": {"expires": 50},
        },
    }
)

# --- Retention (see README "Subject rights") ------------------------------------------------------------------
# Rows older than these many days are deleted by beat, daily by default; 0 keeps them. The prediction log (shadow
# copies too) and the dead letters hold inputs and routing keys; feedback and business events feed experiments, so
# they are kept unless a deployment says otherwise.
MODELWORKS_RETENTION_PREDICTIONS_DAYS = env_int("MODELWORKS_RETENTION_PREDICTIONS_DAYS", 90)
MODELWORKS_RETENTION_DEAD_LETTERS_DAYS = env_int("MODELWORKS_RETENTION_DEAD_LETTERS_DAYS", 90)
MODELWORKS_RETENTION_FEEDBACK_DAYS = env_int("MODELWORKS_RETENTION_FEEDBACK_DAYS", 0)
MODELWORKS_RETENTION_EVENTS_DAYS = env_int("MODELWORKS_RETENTION_EVENTS_DAYS", 0)
_retention_every = every(
    env_int("MODELWORKS_RETENTION_EVERY_S", 24 * 3600), name="MODELWORKS_RETENTION_EVERY_S", minute=30
)  # at minute 30: clear of the hourly artifact check at minute 0
CELERY_BEAT_SCHEDULE.update(
    {
        # Retention by the clock, not by hand: each task deletes in chunks (the partitioned log drops whole days)
        # and does nothing for a setting of 0.
        "serving-prune-predictions": {
            "task": "serving.prune_predictions",
            "schedule": _retention_every,
            "options": {"expires": 3000},
        },
        # Days the log will need get their partitions ahead (a row that would land outside makes its own, at
        # insert); hourly at minute 40, so one missed run or a beat restart costs nothing.
        "serving-keep-log-partitions": {
            "task": "serving.keep_log_partitions",
            "schedule": every(3600, name="MODELWORKS_LOG_PARTITIONS", minute=40),
            "options": {"expires": 1800},
        },
        "serving-prune-dead-letters": {
            "task": "serving.prune_dead_letters",
            "schedule": _retention_every,
            "options": {"expires": 3000},
        },
        # Asynchronous predictions' results past MODELWORKS_ASYNC_RESULT_TTL_S hold inputs: deleted every 10 minutes;
        # requests left queued past MODELWORKS_ASYNC_QUEUE_TIMEOUT_S fail (their callers are told).
        "serving-purge-async-predictions": {
            "task": "serving.purge_async_predictions",
            "schedule": every(env_int("MODELWORKS_ASYNC_PURGE_EVERY_S", 600), name="MODELWORKS_ASYNC_PURGE_EVERY_S"),
            "options": {"expires": 540},
        },
        "monitoring-prune-feedback-and-events": {
            "task": "monitoring.prune_feedback_and_events",
            "schedule": _retention_every,
            "options": {"expires": 3000},
        },
    }
)
# --- end retention ---

# --- Static files, auth, i18n -------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the console's scripts and its vendored chart library
# The console's live regions (the home's table and activity, a rollout's figures) refresh in place this often.
MODELWORKS_CONSOLE_REFRESH_S = env_int("MODELWORKS_CONSOLE_REFRESH_S", 15)
LOGIN_URL = "admin:login"
# --- Abuse protections (README "Abuse protections") ---
# Failed logins (the admin login, POST /api/v1/auth/token/) are counted per username and client address; past the
# limit that pair is refused for the cool-off, a correct password included, and every attempt during it starts the
# cool-off again. Only logins made from a request are counted (config/lockout.py).
AUTHENTICATION_BACKENDS = ["config.lockout.WebLoginLockout", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("MODELWORKS_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_duration("MODELWORKS_LOGIN_LOCKOUT", "15m"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
# Behind one trusted proxy (nginx: USE_X_FORWARDED_PROTO says there is one), the client's address is the last one in
# X-Forwarded-For, which that proxy appended; without this every client would share the proxy's address.
MODELWORKS_TRUST_X_FORWARDED_FOR = env_bool(
    "MODELWORKS_TRUST_X_FORWARDED_FOR", env_bool("USE_X_FORWARDED_PROTO", False)
)
AXES_CLIENT_IP_CALLABLE = "config.lockout.client_address"
# Users' API tokens (POST /api/v1/auth/token/) are kept as a SHA-512 digest and expire after this.
MODELWORKS_TOKEN_TTL_S = env_duration("MODELWORKS_TOKEN_TTL", "30d")
REST_KNOX = {
    "TOKEN_TTL": timedelta(seconds=MODELWORKS_TOKEN_TTL_S),
    "TOKEN_PREFIX": "mwt_",
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
# Per caller (a user, or an API key) on the management API, a sliding minute; the prediction endpoints are outside
# DRF and keep only their API keys' own limits. Over it: 429 with Retry-After.
MODELWORKS_API_RATE = env_str("MODELWORKS_API_RATE", "1200/min")
# Token requests per client address: each costs a password hash (~0.2 s of CPU) whatever the username.
MODELWORKS_TOKEN_RATE = env_str("MODELWORKS_TOKEN_RATE", "30/min")
# Prometheus endpoints (/metrics, /metrics/monitoring) answer a scraper that sends this bearer token, or one whose
# address is in these networks; everyone else gets 401 (config/scrape.py).
MODELWORKS_METRICS_TOKEN = env_secret("MODELWORKS_METRICS_TOKEN")
MODELWORKS_METRICS_ALLOWED_NETWORKS = env_list("MODELWORKS_METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
if MODELWORKS_METRICS_TOKEN and not DEBUG and (_problem := placeholder_problem("MODELWORKS_METRICS_TOKEN",
                                                                               MODELWORKS_METRICS_TOKEN)):  # fmt: skip
    raise ImproperlyConfigured(_problem)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security: secure defaults whenever DEBUG is off ---------------------------------------------------------------
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^metrics/monitoring$"]
# HSTS is a promise browsers remember for its whole lifetime: switch it on once TLS is known good (README).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"

# --- API ----------------------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "serving.auth.ApiKeyAuthentication",
        "serving.tokens.UserTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every route's permission, from one map (config/access.py), decided by registry/permissions.py.
    "DEFAULT_PERMISSION_CLASSES": ["config.access.RoutePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [  # DRF's defaults, with JSON refusing what Postgres cannot store (config/parsers.py)
        "config.parsers.StorableJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["config.throttles.ManagementRateThrottle"],
    "NUM_PROXIES": 1 if MODELWORKS_TRUST_X_FORWARDED_FOR else None,  # the throttles' client address, as above
    "DEFAULT_PAGINATION_CLASS": "config.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelworks API",
    "DESCRIPTION": "Model registry, serving and lifecycle management for scikit-learn models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status": name each choice set so the schema's enums stay stable and readable.
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "registry.models.VersionStatus",
        "RolloutStatusEnum": "rollouts.models.RolloutStatus",
        "MonitorCorrectionEnum": "monitoring.models.Correction",
        "RuntimeEnum": "registry.models.Runtime",  # a version's runtime and its override share one choice set
        "BatchJobStatusEnum": "serving.batch_models.JobStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "serving.openapi.add_hot_path",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
