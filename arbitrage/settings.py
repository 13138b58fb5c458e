"""Settings, all read from the environment here and nowhere else.

With no environment at all this is the *embedded default*: SQLite (WAL) under
``var/``, a Celery broker on the filesystem, a file-based cross-process cache as
the routing KV and local filesystem storage. Setting ``DATABASE_URL``,
``CELERY_BROKER_URL``, ``REDIS_URL`` and ``STORAGE_*`` switches each part to its
service. See docs/configuration.md for the full list.
"""

from __future__ import annotations

import os
import re
import secrets
from decimal import Decimal
from pathlib import Path

import dj_database_url
from kombu import Queue

from arbitrage.env import (
    ConfigError,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_mapping,
    env_pairs,
    env_rate,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ARBITRAGE_VAR_DIR") or BASE_DIR / "var").resolve()
try:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ConfigError("ARBITRAGE_VAR_DIR", f"cannot create {VAR_DIR} ({exc.strerror})") from None


def _embedded_secret_key() -> str:
    """A random key kept under var/ so signatures survive restarts."""
    path = VAR_DIR / "secret_key"
    try:
        # Created 0600 in one step: the key is never readable by another user, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)  # a key written before this rule may be world-readable
    else:
        with os.fdopen(fd, "w") as key_file:
            key_file.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or _embedded_secret_key()
if len(SECRET_KEY) < 32:
    raise ConfigError("SECRET_KEY", "must be at least 32 characters long")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS (docs/operations.md "HTTPS") ----------------------------------------
# HTTPS_ONLY=true: plain HTTP is redirected to HTTPS (except /healthz and /metrics, which
# probes and scrapers may read on the private network), the session and CSRF cookies are
# sent over HTTPS only, and HSTS is sent for SECURE_HSTS_SECONDS.
HTTPS_ONLY = env_bool("HTTPS_ONLY", False)
SECURE_SSL_REDIRECT = HTTPS_ONLY
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = HTTPS_ONLY
CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS_ONLY else 0, minimum=0, maximum=2 * 31_536_000)
# Subdomains too (the workload endpoints `{id}.workloads.<WORKLOAD_DOMAIN>` may be one): only
# when every one of them is served over HTTPS; preload: once the domain goes on the browsers' list.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Behind a proxy that ends TLS: the header it sets on requests that came over HTTPS, as
# "Header-Name=value" (e.g. "X-Forwarded-Proto=https"). The proxy must overwrite the header.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = None
if _proxy_ssl_header:
    _header, _sep, _value = (part.strip() for part in _proxy_ssl_header.partition("="))
    if not _sep or not _value or not re.fullmatch(r"[A-Za-z0-9-]+", _header):
        raise ConfigError("SECURE_PROXY_SSL_HEADER", f"expected Header-Name=value, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.upper().replace("-", "_"), _value)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "arbitrage",
    "accounts",
    "workloads",
    "placement",
    "storage",
    "billing",
    "fleet",
    "console",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "arbitrage.api.middleware.SingleQueryParametersMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "arbitrage.urls"
WSGI_APPLICATION = "arbitrage.wsgi.application"
ASGI_APPLICATION = "arbitrage.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes={"postgres", "postgresql", "pgsql", "sqlite"})
if DATABASE_URL:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
    if _database["ENGINE"] != "django.db.backends.sqlite3" and not _database.get("NAME"):
        raise ConfigError("DATABASE_URL", "no database name in the URL path")
else:
    _database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        # The test database is a file too, so a real worker process can share it.
        "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
    }
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # WAL lets readers and one writer work at once across processes;
        # IMMEDIATE takes the write lock at BEGIN, so a transaction that reads
        # then writes never fails half-way on a lock upgrade.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Caches: the routing KV ---------------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes={"redis", "rediss", "unix"})
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
        "routing": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "TIMEOUT": None,
            "KEY_PREFIX": "kv",
        },
        # Rate-limit counters (arbitrage/throttle.py): one Redis for every web process.
        "throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "rl",
        },
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        # A file per key: shared by every process on this machine.
        "routing": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": VAR_DIR / "kv",
            "TIMEOUT": None,
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        },
        # Rate-limit counters (arbitrage/throttle.py), shared by the web processes of this machine.
        # Each counter names its window and carries its own timeout; the default covers a day's window.
        "throttle": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": VAR_DIR / "throttle",
            "TIMEOUT": 86_400,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        },
    }

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = env_url(
    "CELERY_BROKER_URL", schemes={"redis", "rediss", "amqp", "amqps", "filesystem", "sqla+sqlite"}
) or (REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_BROKER_TRANSPORT = None
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT = "arbitrage.broker:FilesystemTransport"
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
        # The default 1 s between polls of an empty queue would pace every workflow wait.
        "polling_interval": 0.1,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Steps are short: a few prefetched messages per process keep a worker busy
# instead of waiting a broker poll between tasks (the filesystem broker polls).
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# Celery's Django fixup closes the database connection after every task unless told to reuse it:
# a new PostgreSQL backend (a fork, a login, SET TIME ZONE) per step. Reused for this many tasks,
# and Django's CONN_MAX_AGE / health checks still retire it when it is old or broken.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_SERIALIZER = "json"
# The sweeps that wake waiting runs and watch running ones have a queue of their own, which every
# worker consumes beside the default one: they are not held behind thousands of queued steps.
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (Queue("celery"), Queue("sweeps"))
CELERY_TASK_ROUTES = {
    "workloads.readiness_sweep": {"queue": "sweeps"},
    "workloads.health_sweep": {"queue": "sweeps"},
}
CELERY_ACCEPT_CONTENT = ["json"]
# Beat sends only while it holds the beat lock (arbitrage/beat.py), so a second beat waits;
# a leader that dies is replaced within the TTL (Redis) or at the next retry (file lock).
CELERY_BEAT_SCHEDULER = "arbitrage.beat:LeaderScheduler"
BEAT_LOCK_TTL_SECONDS = env_int("BEAT_LOCK_TTL_SECONDS", 15, minimum=2, maximum=600)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"

# --- Storage ------------------------------------------------------------------
# Workload object storage (docs/architecture.md §9). With STORAGE_BUCKET set: any S3 API
# (AWS S3, Cloudflare R2, MinIO) by configuration alone; else the local
# filesystem under VAR_DIR/media with Django-signed URLs served by this app.
STORAGE_BUCKET = env_str("STORAGE_BUCKET")
STORAGE_ENDPOINT_URL = env_url("STORAGE_ENDPOINT_URL", schemes={"http", "https"}) or None
STORAGE_REGION = env_str("STORAGE_REGION") or None
STORAGE_ACCESS_KEY_ID = env_str("STORAGE_ACCESS_KEY_ID") or None
STORAGE_SECRET_ACCESS_KEY = env_str("STORAGE_SECRET_ACCESS_KEY") or None
# "path" for MinIO and most self-hosted S3 APIs, "virtual" for AWS, "auto" lets botocore choose.
STORAGE_ADDRESSING_STYLE = env_str("STORAGE_ADDRESSING_STYLE", "auto").lower()
if STORAGE_ADDRESSING_STYLE not in {"auto", "path", "virtual"}:
    raise ConfigError("STORAGE_ADDRESSING_STYLE", f"expected auto, path or virtual, got {STORAGE_ADDRESSING_STYLE!r}")
# Presigned POST (with a content-length range capped at the remaining quota); off for
# backends without POST Object (Cloudflare R2): presigned PUT is used instead.
STORAGE_PRESIGNED_POST = env_bool("STORAGE_PRESIGNED_POST", True)
# Signed URL lifetime: the default, and the most a caller may ask for (S3's own limit is 7 days).
STORAGE_URL_EXPIRY_SECONDS = env_int("STORAGE_URL_EXPIRY_SECONDS", 3600, minimum=1, maximum=7 * 24 * 3600)
STORAGE_URL_MAX_EXPIRY_SECONDS = env_int(
    "STORAGE_URL_MAX_EXPIRY_SECONDS", 7 * 24 * 3600, minimum=STORAGE_URL_EXPIRY_SECONDS, maximum=7 * 24 * 3600
)
# Uploads declared larger than this go through S3 multipart upload, in parts of this size.
STORAGE_MULTIPART_THRESHOLD_BYTES = env_int(
    "STORAGE_MULTIPART_THRESHOLD_BYTES", 64 * 1024**2, minimum=5 * 1024**2, maximum=5 * 1024**4
)
STORAGE_MULTIPART_PART_BYTES = env_int(
    "STORAGE_MULTIPART_PART_BYTES", 64 * 1024**2, minimum=5 * 1024**2, maximum=5 * 1024**3
)
# Expired objects deleted per DeleteObjects call (S3 takes at most 1000).
STORAGE_EXPIRY_BATCH_SIZE = env_int("STORAGE_EXPIRY_BATCH_SIZE", 1000, minimum=1, maximum=1000)
MEDIA_ROOT = VAR_DIR / "media"
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
if STORAGE_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": STORAGE_BUCKET,
            "endpoint_url": STORAGE_ENDPOINT_URL,
            "region_name": STORAGE_REGION,
            "access_key": STORAGE_ACCESS_KEY_ID,
            "secret_key": STORAGE_SECRET_ACCESS_KEY,
            "addressing_style": None if STORAGE_ADDRESSING_STYLE == "auto" else STORAGE_ADDRESSING_STYLE,
            "default_acl": None,
            "file_overwrite": True,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve admin and Swagger UI assets straight from the apps: no collectstatic step.
WHITENOISE_USE_FINDERS = True

# --- API ----------------------------------------------------------------------
# Bodies over this are refused with 413 from their Content-Length, before being read.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024, maximum=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# Rate limits (arbitrage/api/throttling.py, arbitrage/admin_login.py), as "N/second|minute|hour|day":
# requests per API key or agent token, refused credentials per source address, and failed
# admin logins per source address and username. Past one: 429 with Retry-After.
API_THROTTLE_RATE = env_rate("API_THROTTLE_RATE", "1200/minute")
API_AUTH_FAILURE_RATE = env_rate("API_AUTH_FAILURE_RATE", "10/minute")
ADMIN_LOGIN_FAILURE_RATE = env_rate("ADMIN_LOGIN_FAILURE_RATE", "5/minute")
# How many proxies in front of the web server append to X-Forwarded-For; 0 (the default):
# the header is ignored and the source address is the connection's.
API_TRUSTED_PROXIES = env_int("API_TRUSTED_PROXIES", 0, minimum=0, maximum=10)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["arbitrage.api.parsers.SafeJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "arbitrage.api.parsers.StrictContentNegotiation",
    "DEFAULT_THROTTLE_CLASSES": [
        "arbitrage.api.throttling.AuthFailureThrottle",
        "arbitrage.api.throttling.CredentialRateThrottle",
    ],
    # The source address is REMOTE_ADDR unless proxies in front add X-Forwarded-For.
    "NUM_PROXIES": API_TRUSTED_PROXIES,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "arbitrage.api.pagination.StandardPagination",
    "DEFAULT_SCHEMA_CLASS": "arbitrage.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "arbitrage.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Compute Arbitrage API",
    "DESCRIPTION": "Run workloads on the cheapest spot capacity across AWS, GCP and Azure.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "WorkloadStatusEnum": "workloads.models.WorkloadStatus",
        "InstanceStatusEnum": "workloads.models.InstanceStatus",
    },
}

# --- Local cloud --------------------------------------------------------------
# The `local` backend runs each instance as a process on this machine, with its
# state, logs and injected faults under VAR_DIR/local-cloud/ (docs/architecture.md §8).
# "fleet": one long-running host process serves every new instance instead, each on a loopback
# address of its own (placement/clouds/local/fleet_host.py), so 10,000 instances fit on one machine.
LOCAL_CLOUD_HOST_MODE = env_str("LOCAL_CLOUD_HOST_MODE", "process")
if LOCAL_CLOUD_HOST_MODE not in ("process", "fleet"):
    raise ConfigError("LOCAL_CLOUD_HOST_MODE", f"expected process or fleet, got {LOCAL_CLOUD_HOST_MODE!r}")
# A new instance reports "pending" this long, like a booting VM.
LOCAL_CLOUD_BOOT_DELAY_MS = env_int("LOCAL_CLOUD_BOOT_DELAY_MS", 2000, minimum=0, maximum=600_000)
# How long terminate waits after SIGTERM before it sends SIGKILL.
# Customer ``command``s run on this machine: off unless the operator accepts that, and then each
# instance runs in a bubblewrap sandbox (placement/clouds/local/sandbox.py, docs/clouds.md).
LOCAL_CLOUD_ALLOW_COMMANDS = env_bool("LOCAL_CLOUD_ALLOW_COMMANDS", False)
if LOCAL_CLOUD_ALLOW_COMMANDS and LOCAL_CLOUD_HOST_MODE == "fleet":
    raise ConfigError(
        "LOCAL_CLOUD_ALLOW_COMMANDS", "cannot be on with LOCAL_CLOUD_HOST_MODE=fleet (its host runs only the agent)"
    )
# A recorded spot trace (placement/clouds/local/trace.py, docs/clouds.md): its zones' capacity and
# prices, on a clock LOCAL_CLOUD_TRACE_SPEED times faster than the wall's.
LOCAL_CLOUD_TRACE_AVAILABILITY = env_str("LOCAL_CLOUD_TRACE_AVAILABILITY")
LOCAL_CLOUD_TRACE_PRICES = env_str("LOCAL_CLOUD_TRACE_PRICES")
for _name, _path in (("LOCAL_CLOUD_TRACE_AVAILABILITY", LOCAL_CLOUD_TRACE_AVAILABILITY),
                     ("LOCAL_CLOUD_TRACE_PRICES", LOCAL_CLOUD_TRACE_PRICES)):  # fmt: skip
    if _path and not Path(_path).exists():
        raise ConfigError(_name, f"{_path} does not exist")
if LOCAL_CLOUD_TRACE_AVAILABILITY and not any(Path(LOCAL_CLOUD_TRACE_AVAILABILITY).glob("*.csv")):
    raise ConfigError("LOCAL_CLOUD_TRACE_AVAILABILITY", "expected a directory of <zone>_*.csv availability files")
LOCAL_CLOUD_TRACE_SPEED = env_float("LOCAL_CLOUD_TRACE_SPEED", 1.0, minimum=0.001, maximum=1_000_000)
LOCAL_CLOUD_TRACE_START_ROW = env_int("LOCAL_CLOUD_TRACE_START_ROW", 0, minimum=0)
LOCAL_CLOUD_TRACE_PROVIDER = env_str("LOCAL_CLOUD_TRACE_PROVIDER", "aws")
if LOCAL_CLOUD_TRACE_PROVIDER not in ("aws", "gcp", "azure"):
    raise ConfigError("LOCAL_CLOUD_TRACE_PROVIDER", f"expected aws, gcp or azure, got {LOCAL_CLOUD_TRACE_PROVIDER!r}")
LOCAL_CLOUD_TRACE_INSTANCE_TYPE = env_str("LOCAL_CLOUD_TRACE_INSTANCE_TYPE", "p3.2xlarge")
# The traced instance type's shape, as the catalog needs it (default: p3.2xlarge's).
_trace_shape = {"vcpu": "8", "memory_gb": "61", "gpu_count": "1", "gpu_type": "V100"}
_trace_shape.update(env_pairs("LOCAL_CLOUD_TRACE_SHAPE"))
try:
    LOCAL_CLOUD_TRACE_SHAPE = {
        "vcpu": int(_trace_shape["vcpu"]),
        "memory_gb": float(_trace_shape["memory_gb"]),
        "gpu_count": int(_trace_shape["gpu_count"]),
        "gpu_type": _trace_shape["gpu_type"] if int(_trace_shape["gpu_count"]) else None,
    }
except (KeyError, ValueError):
    raise ConfigError("LOCAL_CLOUD_TRACE_SHAPE", "expected vcpu=N,memory_gb=N,gpu_count=N,gpu_type=NAME") from None
LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE = Decimal(str(env_float("LOCAL_CLOUD_TRACE_ON_DEMAND_PRICE", 3.06, minimum=0.0001)))
LOCAL_CLOUD_STOP_GRACE_SECONDS = env_int("LOCAL_CLOUD_STOP_GRACE_SECONDS", 5, minimum=0, maximum=600)

# --- Placement ----------------------------------------------------------------
# A pool (provider, region, zone, instance type) is skipped this long after a spot
# interruption or a capacity error there.
POOL_BLOCK_SECONDS = env_int("POOL_BLOCK_SECONDS", 300, minimum=1, maximum=7 * 24 * 3600)
# Offers rank by expected cost: spot price x (1 + interruptions per hour x hours lost per
# interruption). A replacement takes PLACEMENT_RESTART_MINUTES to run and, on average, half a
# checkpoint interval of work is done again. A pool's interruption bucket (the spot advisor's
# "<5%" ... ">20%") is read as the chance of one interruption within PLACEMENT_RISK_HORIZON_HOURS.
PLACEMENT_RESTART_MINUTES = env_int("PLACEMENT_RESTART_MINUTES", 10, minimum=0, maximum=24 * 60)
PLACEMENT_CHECKPOINT_MINUTES = env_int("PLACEMENT_CHECKPOINT_MINUTES", 60, minimum=0, maximum=7 * 24 * 60)
PLACEMENT_RISK_HORIZON_HOURS = env_int("PLACEMENT_RISK_HORIZON_HOURS", 24, minimum=1, maximum=24 * 365)
# Live price refresh (beat, `manage.py catalog_refresh`): whose public price APIs to read.
# Empty (the default) keeps the bundled snapshot, so the embedded default works offline.
PRICE_SOURCES = env_list("PRICE_SOURCES", [])
if set(PRICE_SOURCES) - {"aws", "gcp", "azure"}:
    raise ConfigError("PRICE_SOURCES", f"expected a comma-separated subset of aws,gcp,azure, got {PRICE_SOURCES!r}")
# Regions to refresh; empty: every region the catalog holds for that provider.
PRICE_REFRESH_REGIONS = env_list("PRICE_REFRESH_REGIONS", [])
PRICE_REFRESH_TIMEOUT_SECONDS = env_int("PRICE_REFRESH_TIMEOUT_SECONDS", 30, minimum=1, maximum=600)
# Spot placement scores (AWS, 1-10), asked beside a price refresh at most once per this many hours
# (0: never): AWS limits how many distinct score requests an account makes a day. The instance
# types to score; empty: every type of that provider in the catalog (name the types you run).
PLACEMENT_SCORE_REFRESH_HOURS = env_int("PLACEMENT_SCORE_REFRESH_HOURS", 24, minimum=0, maximum=24 * 365)
PLACEMENT_SCORE_INSTANCE_TYPES = env_list("PLACEMENT_SCORE_INSTANCE_TYPES", [])
# AWS reads credentials the standard boto3 way (AWS_ACCESS_KEY_ID, AWS_PROFILE, instance role...).
AZURE_RETAIL_PRICES_URL = env_url(
    "AZURE_RETAIL_PRICES_URL", schemes={"http", "https"}, default="https://prices.azure.com/api/retail/prices"
)
GCP_BILLING_API_URL = env_url(
    "GCP_BILLING_API_URL", schemes={"http", "https"}, default="https://cloudbilling.googleapis.com/v1"
)
GCP_BILLING_API_KEY = env_str("GCP_BILLING_API_KEY")

# --- Clouds -------------------------------------------------------------------
# Which adapter runs each provider's instances: "aws=local,gcp=local,azure=local"
# (the embedded default: the local cloud stands in for all three).
CLOUD_PROVIDERS = ("aws", "gcp", "azure")
CLOUD_BACKENDS = env_mapping(
    "CLOUD_BACKENDS",
    dict.fromkeys(CLOUD_PROVIDERS, "local"),
    keys=set(CLOUD_PROVIDERS),
    values={"local", "aws", "gcp", "azure"},
)
for _provider, _backend in CLOUD_BACKENDS.items():
    if _backend not in ("local", _provider):
        raise ConfigError("CLOUD_BACKENDS", f"{_provider} can run on 'local' or '{_provider}', not {_backend!r}")
# The trace's prices reach the catalog like a cloud's, where the local cloud plays that provider
# (a provider on its real cloud keeps its real price source, or none).
_traced_locally = CLOUD_BACKENDS.get(LOCAL_CLOUD_TRACE_PROVIDER) == "local"
if LOCAL_CLOUD_TRACE_PRICES and _traced_locally and LOCAL_CLOUD_TRACE_PROVIDER not in PRICE_SOURCES:
    PRICE_SOURCES.append(LOCAL_CLOUD_TRACE_PROVIDER)
# Regions each provider is used in: placement only picks its offers there and
# reconciliation lists its instances there; "aws=us-east-1|eu-west-1,gcp=us-central1".
# A provider not named here uses every region of its pools in the catalog.
CLOUD_REGIONS = {
    provider: [region for region in regions.split("|") if region]
    for provider, regions in env_pairs("CLOUD_REGIONS").items()
}
if set(CLOUD_REGIONS) - set(CLOUD_PROVIDERS):
    raise ConfigError("CLOUD_REGIONS", f"providers must be among {', '.join(CLOUD_PROVIDERS)}")
# How the control plane reaches an instance's health-check port: by its public
# address, or by its private one (when it runs inside the same network / a peered VPC).
CLOUD_INSTANCE_ADDRESS = env_str("CLOUD_INSTANCE_ADDRESS", "public")
if CLOUD_INSTANCE_ADDRESS not in ("public", "private"):
    raise ConfigError("CLOUD_INSTANCE_ADDRESS", f"expected public or private, got {CLOUD_INSTANCE_ADDRESS!r}")
# Reconciliation: a managed instance no workload owns is terminated once it is
# older than this (a create in flight has not recorded its instance yet).
RECONCILE_GRACE_SECONDS = env_int("RECONCILE_GRACE_SECONDS", 900, minimum=0, maximum=7 * 86400)
CLOUD_API_TIMEOUT_SECONDS = env_int("CLOUD_API_TIMEOUT_SECONDS", 30, minimum=1, maximum=600)

# AWS (backend "aws"): credentials the standard boto3 way (AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role). Per region: the AMI and
# security group; per availability zone: the subnet ("us-east-1a=subnet-0abc").
AWS_EC2_ENDPOINT_URL = env_url("AWS_EC2_ENDPOINT_URL", schemes={"http", "https"})
AWS_AMI_IDS = env_pairs("AWS_AMI_IDS")
AWS_SECURITY_GROUP_IDS = env_pairs("AWS_SECURITY_GROUP_IDS")
AWS_SUBNET_IDS = env_pairs("AWS_SUBNET_IDS")
AWS_KEY_NAME = env_str("AWS_KEY_NAME")
AWS_IAM_INSTANCE_PROFILE = env_str("AWS_IAM_INSTANCE_PROFILE")
# Per region, the SQS queue EventBridge sends "EC2 Spot Instance Interruption Warning" events to.
AWS_INTERRUPTION_QUEUE_URLS = env_pairs("AWS_INTERRUPTION_QUEUE_URLS")

# GCP (backend "gcp"): a service-account key file, or Application Default Credentials.
GCP_PROJECT = env_str("GCP_PROJECT")
GCP_CREDENTIALS_FILE = env_str("GCP_CREDENTIALS_FILE")
GCP_NETWORK = env_str("GCP_NETWORK", "global/networks/default")
GCP_SUBNETWORKS = env_pairs("GCP_SUBNETWORKS")  # region=regions/<region>/subnetworks/<name>
GCP_IMAGE = env_str("GCP_IMAGE", "projects/debian-cloud/global/images/family/debian-12")
GCP_COMPUTE_ENDPOINT = env_url("GCP_COMPUTE_ENDPOINT", schemes={"http", "https"})

# Azure (backend "azure"): service-principal credentials the azure-identity way
# (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET), or a managed identity.
AZURE_SUBSCRIPTION_ID = env_str("AZURE_SUBSCRIPTION_ID")
AZURE_RESOURCE_GROUP = env_str("AZURE_RESOURCE_GROUP")
# Per region (location), the subnet's resource id the VMs' network interfaces join.
AZURE_SUBNET_IDS = env_pairs("AZURE_SUBNET_IDS")
AZURE_IMAGE = env_str("AZURE_IMAGE", "Canonical:ubuntu-24_04-lts:server:latest")  # publisher:offer:sku:version
AZURE_ADMIN_USERNAME = env_str("AZURE_ADMIN_USERNAME", "arbitrage")
AZURE_SSH_PUBLIC_KEY = env_str("AZURE_SSH_PUBLIC_KEY")
# A bearer token used as-is instead of azure-identity (an emulator, or a short run with
# `az account get-access-token`); leave empty in production.
AZURE_ACCESS_TOKEN = env_str("AZURE_ACCESS_TOKEN")
AZURE_RESOURCE_MANAGER_URL = env_url(
    "AZURE_RESOURCE_MANAGER_URL", schemes={"http", "https"}, default="https://management.azure.com"
)

# --- Gateway ------------------------------------------------------------------
# The routing gateway (gateway): answers for `{id}.workloads.<WORKLOAD_DOMAIN>`
# and `/w/{id}/...`, proxying to the workload's instance.
# How long one request may wait for a migrating workload (INTERRUPTED/UNHEALTHY) to run again.
GATEWAY_MIGRATION_WAIT_SECONDS = env_float("GATEWAY_MIGRATION_WAIT_SECONDS", 30.0, minimum=0, maximum=300)
# The Retry-After value sent with 503 while a workload is not (yet) running.
GATEWAY_RETRY_AFTER_SECONDS = env_int("GATEWAY_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600)
# How long a gateway process reuses a route it read from the KV (0: read the KV on every request).
GATEWAY_ROUTE_CACHE_SECONDS = env_float("GATEWAY_ROUTE_CACHE_SECONDS", 0.5, minimum=0, maximum=1)
# Upstream timeouts: connecting, and each read/write of a proxied request.
GATEWAY_CONNECT_TIMEOUT_SECONDS = env_float("GATEWAY_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.05, maximum=120)
GATEWAY_UPSTREAM_TIMEOUT_SECONDS = env_float("GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 60.0, minimum=0.05, maximum=3600)
# Upstream connection pool of one gateway process.
GATEWAY_MAX_CONNECTIONS = env_int("GATEWAY_MAX_CONNECTIONS", 512, minimum=1, maximum=100_000)
GATEWAY_MAX_KEEPALIVE_CONNECTIONS = env_int("GATEWAY_MAX_KEEPALIVE_CONNECTIONS", 128, minimum=0, maximum=100_000)
# The largest request body the gateway passes on (a larger one gets 413), and the largest websocket message.
GATEWAY_MAX_REQUEST_BODY_BYTES = env_int(
    "GATEWAY_MAX_REQUEST_BODY_BYTES", 100 * 1024 * 1024, minimum=1024, maximum=64 * 1024**3
)
GATEWAY_WEBSOCKET_MAX_MESSAGE_BYTES = env_int(
    "GATEWAY_WEBSOCKET_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, minimum=1024, maximum=1024**3
)

# --- Product ------------------------------------------------------------------
# Endpoints are `{workload-id}.workloads.<WORKLOAD_DOMAIN>`.
WORKLOAD_DOMAIN = env_str("WORKLOAD_DOMAIN", "localhost")
if not WORKLOAD_DOMAIN or "/" in WORKLOAD_DOMAIN or " " in WORKLOAD_DOMAIN:
    raise ConfigError("WORKLOAD_DOMAIN", f"expected a DNS name, got {WORKLOAD_DOMAIN!r}")
# Where a workload's instance reaches this API (its agent's checkpoints and reports).
PUBLIC_API_URL = env_url("PUBLIC_API_URL", schemes={"http", "https"}, default="http://127.0.0.1:8000")
# Health sweep (beat): how often, how long one check may take, how many at once,
# and after how many consecutive failures a workload is UNHEALTHY.
HEALTH_SWEEP_SECONDS = env_int("HEALTH_SWEEP_SECONDS", 15, minimum=1, maximum=3600)
HEALTH_CHECK_TIMEOUT_SECONDS = env_float("HEALTH_CHECK_TIMEOUT_SECONDS", 2.0, minimum=0.05, maximum=60)
HEALTH_CHECK_CONCURRENCY = env_int("HEALTH_CHECK_CONCURRENCY", 500, minimum=1, maximum=10_000)
HEALTH_FAILURE_THRESHOLD = env_int("HEALTH_FAILURE_THRESHOLD", 3, minimum=1, maximum=100)
# Readiness sweep (beat, workloads/workflows/readiness.py): how often one pass checks every instance a
# provisioning run waits on and wakes the runs whose instance answers (a long pass spaces the next
# ones out). While it runs, a waiting run's own re-check (the fallback) comes only every
# READINESS_POLL_SECONDS, at the latest at its wait's limit (5 minutes); with no sweep running, waits
# re-check every 5 s on their own. Each re-check is a task: thousands of runs booting at once would
# otherwise be thousands of tasks a second.
READINESS_SWEEP_SECONDS = env_int("READINESS_SWEEP_SECONDS", 2, minimum=1, maximum=3600)
READINESS_POLL_SECONDS = env_int("READINESS_POLL_SECONDS", 300, minimum=1, maximum=3600)
# A customer's rebalance moves a workload only to an offer at least this much cheaper (percent).
REBALANCE_MIN_SAVING_PCT = env_float("REBALANCE_MIN_SAVING_PCT", 10.0, minimum=0, maximum=100)
# Pool statistics (what the fleet saw of each pool) halve their weight every this many hours.
POOL_STATS_HALF_LIFE_HOURS = env_float("POOL_STATS_HALF_LIFE_HOURS", 168.0, minimum=1, maximum=87_600)
# The arbitrage controller (beat): how often it asks the policy what each workload should do.
ARBITRAGE_TICK_SECONDS = env_int("ARBITRAGE_TICK_SECONDS", 60, minimum=1, maximum=3600)
# What one launch costs before the job makes progress again (boot, restore): the deadline
# check and the policy count it for every move.
LAUNCH_OVERHEAD_SECONDS = env_int("LAUNCH_OVERHEAD_SECONDS", 600, minimum=0, maximum=86_400)
# While no pool has capacity a workload waits: the first retry after CAPACITY_RETRY_FIRST_SECONDS,
# doubling up to CAPACITY_RETRY_MAX_SECONDS, each with up to 20% jitter.
CAPACITY_RETRY_FIRST_SECONDS = env_float("CAPACITY_RETRY_FIRST_SECONDS", 30.0, minimum=0.1, maximum=60)
CAPACITY_RETRY_MAX_SECONDS = env_float("CAPACITY_RETRY_MAX_SECONDS", 600.0, minimum=1, maximum=86_400)
# Workload logs (docs/workloads.md "Logs"): beat collects each live instance's console output
# every LOGS_COLLECT_SECONDS (at install; the schedule is editable in the admin). A terminated
# workload's lines are kept as long as its storage (its retention_days), or LOGS_RETENTION_DAYS
# when it had no storage. A follower (?follow=1) polls the database every LOGS_FOLLOW_POLL_SECONDS,
# sends a keep-alive comment after LOGS_FOLLOW_KEEPALIVE_SECONDS without lines, and is closed
# after LOGS_FOLLOW_MAX_SECONDS (the client reconnects with Last-Event-ID).
LOGS_COLLECT_SECONDS = env_int("LOGS_COLLECT_SECONDS", 5, minimum=1, maximum=3600)
LOGS_RETENTION_DAYS = env_int("LOGS_RETENTION_DAYS", 30, minimum=1, maximum=3650)
LOGS_FOLLOW_POLL_SECONDS = env_float("LOGS_FOLLOW_POLL_SECONDS", 1.0, minimum=0.01, maximum=60)
LOGS_FOLLOW_KEEPALIVE_SECONDS = env_float("LOGS_FOLLOW_KEEPALIVE_SECONDS", 15.0, minimum=0.1, maximum=300)
LOGS_FOLLOW_MAX_SECONDS = env_int("LOGS_FOLLOW_MAX_SECONDS", 3600, minimum=1, maximum=86_400)
# Multiplies every workflow delay (retry backoff, wait polls, stall detection).
# 1 in production; a test run or a demo may shorten the clock.
WORKFLOW_TIME_SCALE = env_float("WORKFLOW_TIME_SCALE", 1.0, minimum=0.001, maximum=100.0)
# A running workflow whose tasks have not touched it for this long lost its
# chain (worker killed, broker restarted) and is resumed by beat.
WORKFLOW_STALL_SECONDS = env_int("WORKFLOW_STALL_SECONDS", 120, minimum=1)
DEFAULT_MAX_CONCURRENT_WORKLOADS = env_int("DEFAULT_MAX_CONCURRENT_WORKLOADS", 10, minimum=1, maximum=100_000)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ConfigError("LOG_LEVEL", f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
# One handler for every process (web, gateway, Celery worker and beat: arbitrage/celery.py uses this too).
# Its filter adds the log context (workload_id, run_id, step, kind: set by the step engine and by
# tasks that take a workload or run id) to every record; the formatter is LOG_FORMAT's (arbitrage/logs.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "arbitrage.logs.LogContextFilter"}},
    "formatters": {"configured": {"()": "arbitrage.logs.configured_formatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "configured", "filters": ["log_context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # The cloud SDKs and httpx (the API client) log every request at INFO: keep their warnings only.
        "azure": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        "google": {"level": "WARNING"},
    },
}

# --- Metrics and logs ---------------------------------------------------------------
# /metrics (Prometheus text format) answers staff users, and scrapers sending
# "Authorization: Bearer <METRICS_TOKEN>"; METRICS_PUBLIC=true opens it to anyone.
METRICS_PUBLIC = env_bool("METRICS_PUBLIC", False)
METRICS_TOKEN = env_str("METRICS_TOKEN")
# "text" for people, "json" for a log pipeline: one object per line, with workload_id and run_id.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise ConfigError("LOG_FORMAT", f"expected text or json, got {LOG_FORMAT!r}")
