"""Settings for every environment, read from the environment (see README "Configuration").

Nothing here branches on an environment name: each value has one variable and a
default suitable for the quickstart. Values that would be unsafe in production
(no SECRET_KEY with DEBUG off) stop the process at start.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.env import env_bool, env_float, env_floats, env_int, env_list, env_rate, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state of the quickstart (the embedded PostgreSQL's data, uploaded media).
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

# --- Core ------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off. Set SECRET_KEY to a long random "
            "string (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-" + "x" * 16

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_beat",
    "axes",
    "crm",
    "catalog",
    "recommendations",
    "delivery",
    "campaigns",
    "ingestion",
    "localproviders",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    # Before anything reads the body (CsrfViewMiddleware reads the console's forms).
    "catalog.middleware.UploadLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: refuses a locked-out console login.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# --- Database ----------------------------------------------------------------
# PostgreSQL, always: DATABASE_URL=postgres://user@host:5432/name. `manage.py`
# and the test run set it to an embedded server under var/ when it is unset
# (config/embedded_db.py); every other process (web, workers) needs it set.
DATABASE_URL = env_str("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Set it to a PostgreSQL server (postgres://user:password@host:5432/name), "
        "or run through manage.py / `make run`, which start the embedded server under var/."
    )
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(f"DATABASE_URL must name a PostgreSQL server (postgres://…), not {DATABASE_URL!r}")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Server-side prepared statements for the hottest queries (recommendation serving).
# Turn off behind a pooler in transaction mode (PgBouncer), where a session's
# prepared statements do not follow it from one transaction to the next.
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
# The interpreter's thread switch interval in web processes, in ms (0: Python's 5 ms);
# see config/wsgi.py. 1 for the recommendation API's single-threaded processes.
WEB_SWITCH_INTERVAL_MS = env_int("WEB_SWITCH_INTERVAL_MS", 0)

# --- Cache -------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # The rate limits sync to it from the collectors and the APIs: a stalled
            # Redis must cost a request a second at most, never hang it.
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Storage (uploaded catalogs, training artifacts) ---------------------------
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_URL = "/static/"
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    # Credentials come from the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    # variables (boto3 reads them); the endpoint allows S3-compatible servers.
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL"),
            "region_name": env_str("AWS_S3_REGION_NAME"),
            "default_acl": None,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        # Hashed, compressed names in production (needs `collectstatic`); plain
        # names in the quickstart and tests.
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("STATIC_MANIFEST", not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Static files are served by whitenoise from the collected folder; in tests and
# the quickstart they are found in the apps directly.
WHITENOISE_USE_FINDERS = DEBUG or env_bool("WHITENOISE_USE_FINDERS", False)

# --- Celery --------------------------------------------------------------------
# Unset broker: tasks run in-process (eager) so the quickstart needs no service.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or ""
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
# Only RabbitMQ can promise the collectors' 200: it hands an unacknowledged
# message back the moment a worker's connection drops. Kombu's Redis transport
# pops a message and records it as unacknowledged in two steps, so a worker
# killed between them loses the batch, and an in-flight one waits for the
# visibility timeout (docs/architecture.md, "Delivery guarantees"). Redis stays
# possible for development, by saying so.
_broker_scheme = CELERY_BROKER_URL.split("://", 1)[0].lower() if CELERY_BROKER_URL else ""
_broker_is_redis = _broker_scheme in ("redis", "rediss")
if _broker_is_redis and not env_bool("CELERY_BROKER_ACCEPT_LOSS", False):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is a Redis broker, which can lose accepted events when a worker is killed: "
        "use RabbitMQ (amqp://…), or set CELERY_BROKER_ACCEPT_LOSS=1 to accept that (development only)"
    )
if _broker_scheme and not _broker_is_redis and _broker_scheme not in ("amqp", "amqps", "pyamqp"):
    raise ImproperlyConfigured(f"CELERY_BROKER_URL must be amqp://… (RabbitMQ), not {_broker_scheme}://…")
if _broker_is_redis:
    # What a worker killed mid-batch costs on Redis: the batch comes back after
    # this many seconds (Celery's default is an hour). Longer than any task:
    # a training run on the ml queue that outlives it would be started twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_REDIS_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Each app's tasks on its own queue, so a slow training run never delays ingestion.
CELERY_TASK_ROUTES = {
    "ingestion.*": {"queue": "ingest"},
    "recommendations.*": {"queue": "ml"},
    # Segment membership refreshes: their own queue, so a full recomputation of a big
    # segment never delays sends, and sends never delay membership.
    "campaigns.segments.*": {"queue": "segments"},
    "campaigns.*": {"queue": "sends"},
    "delivery.*": {"queue": "sends"},
}
# The ingest queue's RabbitMQ queue type: "classic" (durable, persistent
# messages) or "quorum" (a Raft log, fsynced in batches; see
# docs/benchmarks.md for what each costs the collectors' confirmations).
# Changing it on a running broker needs the queue deleted once, empty.
INGEST_QUEUE_TYPE = env_str("INGEST_QUEUE_TYPE") or "classic"
if INGEST_QUEUE_TYPE not in ("classic", "quorum"):
    raise ImproperlyConfigured(f"INGEST_QUEUE_TYPE must be classic or quorum, got {INGEST_QUEUE_TYPE!r}")
if INGEST_QUEUE_TYPE == "quorum":
    CELERY_TASK_QUEUES = [
        Queue("default"),
        Queue("ingest", queue_arguments={"x-queue-type": "quorum"}),
        Queue("ml"),
        Queue("sends"),
        Queue("segments"),
    ]
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4)
# --- Segments (campaigns.segments.membership) ---------------------------------------
# Profile ids per transaction of a full computation (one membership statement each).
SEGMENTS_COMPUTE_CHUNK = env_int("SEGMENTS_COMPUTE_CHUNK", 50_000)
# Seconds the ingest workers' hook keeps a project's segment dependencies; a
# saved segment's full computation starts this long (+1 s) after the save.
SEGMENTS_DEPENDENCIES_CACHE_SECONDS = env_int("SEGMENTS_DEPENDENCIES_CACHE_SECONDS", 3)
# A profile the ingest hook had not seen, created less than this long ago, is
# evaluated against all the project's segments (it may match without events).
SEGMENTS_NEW_PROFILE_SECONDS = env_int("SEGMENTS_NEW_PROFILE_SECONDS", 3600)
# How often the profiles near a time boundary are re-evaluated, and segment sizes sampled.
SEGMENTS_TIME_REFRESH_SECONDS = env_int("SEGMENTS_TIME_REFRESH_SECONDS", 60)
SEGMENTS_SIZE_SAMPLE_SECONDS = env_int("SEGMENTS_SIZE_SAMPLE_SECONDS", 3600)
for _name in (
    "SEGMENTS_COMPUTE_CHUNK",
    "SEGMENTS_NEW_PROFILE_SECONDS",
    "SEGMENTS_TIME_REFRESH_SECONDS",
    "SEGMENTS_SIZE_SAMPLE_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {globals()[_name]}")
if SEGMENTS_DEPENDENCIES_CACHE_SECONDS < 0:
    raise ImproperlyConfigured(
        f"SEGMENTS_DEPENDENCIES_CACHE_SECONDS must be 0 or more, got {SEGMENTS_DEPENDENCIES_CACHE_SECONDS}"
    )

# --- Delivery (delivery.services) ----------------------------------------------------
# A claimed message whose worker has not recorded a result after this long goes
# back to the queue (the worker died mid-send; it may then be sent twice: see
# delivery/services/send.py). Longer than any provider call with its timeout.
DELIVERY_CLAIM_TIMEOUT_SECONDS = env_int("DELIVERY_CLAIM_TIMEOUT_SECONDS", 300)
# How often the sweeper runs (stale claims, due delayed messages).
DELIVERY_SWEEP_SECONDS = env_int("DELIVERY_SWEEP_SECONDS", 15)
# Due rows dispatched per sweep, and how long a dispatched task may stay unclaimed
# before its rows are dispatched again (a lost task; a duplicate claims nothing).
DELIVERY_SWEEP_LIMIT = env_int("DELIVERY_SWEEP_LIMIT", 50_000)
DELIVERY_DISPATCH_TIMEOUT_SECONDS = env_int("DELIVERY_DISPATCH_TIMEOUT_SECONDS", 900)
# Provider calls per message (temporary errors retried with exponential backoff and
# jitter, from the base, capped at the max) before it fails as retries_exhausted.
DELIVERY_MAX_ATTEMPTS = env_int("DELIVERY_MAX_ATTEMPTS", 5)
DELIVERY_RETRY_BASE_SECONDS = env_int("DELIVERY_RETRY_BASE_SECONDS", 30)
DELIVERY_RETRY_MAX_SECONDS = env_int("DELIVERY_RETRY_MAX_SECONDS", 3600)
for _name in (
    "DELIVERY_CLAIM_TIMEOUT_SECONDS",
    "DELIVERY_SWEEP_SECONDS",
    "DELIVERY_SWEEP_LIMIT",
    "DELIVERY_DISPATCH_TIMEOUT_SECONDS",
    "DELIVERY_MAX_ATTEMPTS",
    "DELIVERY_RETRY_BASE_SECONDS",
    "DELIVERY_RETRY_MAX_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {globals()[_name]}")
# Listeners of what happened to messages (delivery/outcomes.py): campaign counters.
DELIVERY_OUTCOME_HOOKS = ["campaigns.results.counters.outcomes_count_hook"]

# --- Campaigns (campaigns.sending) -------------------------------------------------
# Profile ids per chunk task of a run's fan-out: each chunk is one transaction and
# one messages_enqueue call (at most its ENQUEUE_MAX, 10,000).
CAMPAIGNS_CHUNK_SIZE = env_int("CAMPAIGNS_CHUNK_SIZE", 1_000)
# Chunks a planner step publishes before queueing the next step behind them, so
# the chunks' send batches reach the sends queue early (the first message within
# seconds) and a pause stops the planning within a few chunks.
CAMPAIGNS_PLAN_AHEAD = env_int("CAMPAIGNS_PLAN_AHEAD", 4)
# How often the beat starts the "at" campaigns that are due.
CAMPAIGNS_DUE_SECONDS = env_int("CAMPAIGNS_DUE_SECONDS", 60)
for _name in ("CAMPAIGNS_CHUNK_SIZE", "CAMPAIGNS_PLAN_AHEAD", "CAMPAIGNS_DUE_SECONDS"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {globals()[_name]}")
if CAMPAIGNS_CHUNK_SIZE > 10_000:
    raise ImproperlyConfigured(f"CAMPAIGNS_CHUNK_SIZE must be at most 10000 (ENQUEUE_MAX), got {CAMPAIGNS_CHUNK_SIZE}")

# --- Triggered and in-app campaigns (campaigns.sending.triggers, campaigns.channels.inapp)
# Seconds the ingest workers keep a project's live triggered campaigns, and the
# collectors its live in-app campaigns: a campaign started (or paused) takes
# effect this long after.
CAMPAIGNS_TRIGGERS_CACHE_SECONDS = env_int("CAMPAIGNS_TRIGGERS_CACHE_SECONDS", 3)
CAMPAIGNS_INAPP_CACHE_SECONDS = env_int("CAMPAIGNS_INAPP_CACHE_SECONDS", 3)
# How often the beat sends the due triggers (delays wait as rows, not broker ETAs),
# and how many rows one transaction of it takes.
CAMPAIGNS_TRIGGERS_SWEEP_SECONDS = env_int("CAMPAIGNS_TRIGGERS_SWEEP_SECONDS", 5)
CAMPAIGNS_TRIGGERS_BATCH = env_int("CAMPAIGNS_TRIGGERS_BATCH", 500)
# An event older than this when stored (a history import, a device offline for
# days) triggers no campaign.
CAMPAIGNS_TRIGGER_MAX_AGE_SECONDS = env_int("CAMPAIGNS_TRIGGER_MAX_AGE_SECONDS", 86400)
for _name in ("CAMPAIGNS_TRIGGERS_SWEEP_SECONDS", "CAMPAIGNS_TRIGGERS_BATCH", "CAMPAIGNS_TRIGGER_MAX_AGE_SECONDS"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {globals()[_name]}")
# Seconds the ingest workers keep a project's campaign goals and touch windows
# (campaigns.results.attribution): a goal set or a campaign started takes effect this long after.
CAMPAIGNS_RESULTS_CACHE_SECONDS = env_int("CAMPAIGNS_RESULTS_CACHE_SECONDS", 5)
for _name in ("CAMPAIGNS_TRIGGERS_CACHE_SECONDS", "CAMPAIGNS_INAPP_CACHE_SECONDS", "CAMPAIGNS_RESULTS_CACHE_SECONDS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 or more, got {globals()[_name]}")

# The address at which recipients reach this deployment: the links put in
# messages (unsubscribe, and in results the tracked clicks and the open pixel).
PUBLIC_BASE_URL = (env_str("PUBLIC_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
if not PUBLIC_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must be an http(s) URL, got {PUBLIC_BASE_URL!r}")

CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Static entries; the DatabaseScheduler copies them into the admin's periodic tasks.
CELERY_BEAT_SCHEDULE = {
    # New projects get their nightly training and online update schedules within the hour.
    "recommendations: schedules of new projects": {
        "task": "recommendations.schedules_ensure_all",
        "schedule": 3600.0,
        "options": {"queue": "ml"},
    },
    # Segment conditions that change as time passes ("in the last 7 days"): only
    # the profiles near a boundary are re-evaluated (campaigns.segments.membership).
    "segments: time boundaries": {
        "task": "campaigns.segments.time_refresh",
        "schedule": float(SEGMENTS_TIME_REFRESH_SECONDS),
        "options": {"queue": "segments"},
    },
    # The console's chart of each segment's size over time.
    "segments: size samples": {
        "task": "campaigns.segments.sizes_sample",
        "schedule": float(SEGMENTS_SIZE_SAMPLE_SECONDS),
        "options": {"queue": "segments"},
    },
    # Sends whose worker died mid-send go back to the queue; delayed sends go out when due.
    "delivery: sweeper": {
        "task": "delivery.sweep",
        "schedule": float(DELIVERY_SWEEP_SECONDS),
        "options": {"queue": "sends"},
    },
    # Campaigns sent "at" a date and time start here when due (no long broker ETAs).
    "campaigns: due runs": {
        "task": "campaigns.runs_start_due",
        "schedule": float(CAMPAIGNS_DUE_SECONDS),
        "options": {"queue": "sends"},
    },
    # A/B tests first: at their decision time the rule picks the winner, sent to the rest.
    "campaigns: A/B decisions": {
        "task": "campaigns.ab_decide_due",
        "schedule": float(CAMPAIGNS_DUE_SECONDS),
        "options": {"queue": "sends"},
    },
    # Triggered campaigns' pending triggers go out when their delay has passed.
    "campaigns: due triggers": {
        "task": "campaigns.triggers_send_due",
        "schedule": float(CAMPAIGNS_TRIGGERS_SWEEP_SECONDS),
        "options": {"queue": "sends"},
    },
}
CELERY_TIMEZONE = "UTC"

# --- Ingestion (collectors) ------------------------------------------------------
# Seconds a collector request waits for the broker to confirm its messages
# before answering 503, and the Retry-After it then tells the SDK.
INGEST_PUBLISH_TIMEOUT = env_int("INGEST_PUBLISH_TIMEOUT", 5)
INGEST_RETRY_AFTER = env_int("INGEST_RETRY_AFTER", 10)
# Milliseconds a publish may wait for more requests to share it (0: none).
INGEST_PUBLISH_LINGER_MS = env_int("INGEST_PUBLISH_LINGER_MS", 10)
# Later stages plugged into ingestion (see ingestion/hooks.py).
INGEST_RESPONSE_HOOKS = ["campaigns.channels.inapp.collector_response"]
# Profiles changed outside ingestion (the profiles API; see crm/hooks.py).
CRM_PROFILES_CHANGED_HOOKS = ["campaigns.segments.hooks.profiles_changed_hook"]
INGEST_STORED_EVENT_HOOKS = [
    "recommendations.tracking.attribution.events_stored_hook",
    "campaigns.segments.hooks.events_stored_hook",
    "campaigns.sending.triggers.events_stored_hook",
    # The SDK's "Notification Clicked" with our message_id: a click of that message.
    "delivery.receipts.events_stored_hook",
    # Campaign conversions and new views, by last touch (campaigns.results.attribution).
    "campaigns.results.attribution.events_stored_hook",
]

# --- Recommendation serving (recommendations/serving/) -----------------------------
# A user's recommendations come from their newest RECS_SERVE_RECENT items, each older
# one RECS_SERVE_DECAY times less important (the combination evaluated in training).
RECS_SERVE_RECENT = env_int("RECS_SERVE_RECENT", 5)
RECS_SERVE_DECAY = float(env_str("RECS_SERVE_DECAY", "0.8") or "0.8")
# Each web process loads the active version's related lists into memory when it
# has at most this many rows (~20 bytes each there); larger ones are cached per product.
RECS_SERVE_PRELOAD_MAX_ROWS = env_int("RECS_SERVE_PRELOAD_MAX_ROWS", 5_000_000)
# The exclusion window: the last N viewed / purchased products (profiles keep ten of each).
RECS_EXCLUDE_VIEWED = env_int("RECS_EXCLUDE_VIEWED", 10)
RECS_EXCLUDE_PURCHASED = env_int("RECS_EXCLUDE_PURCHASED", 10)
# Served lists are written in bulk this often (0: at once); see recommendations/tracking/impressions.py.
RECS_TRACKING_FLUSH_SECONDS = float(env_str("RECS_TRACKING_FLUSH_SECONDS", "1.0") or "1.0")
# A view of a product recommended this recently is a click even without the recommendation id;
# an order within the conversion window after the recommendation is a conversion.
RECS_CLICK_WINDOW_MINUTES = env_int("RECS_CLICK_WINDOW_MINUTES", 30)
RECS_CONVERSION_WINDOW_HOURS = env_int("RECS_CONVERSION_WINDOW_HOURS", 24)

# --- Recommendations (docs/recommendations.md) -------------------------------------
# A full run widens its date range back until it covers this many interactions.
RECS_MIN_TRAINING_EVENTS = env_int("RECS_MIN_TRAINING_EVENTS", 5_000_000)
RECS_COLLECT_BATCH = env_int("RECS_COLLECT_BATCH", 250_000)  # event ids per collector query
RECS_ONLINE_INTERVAL_MINUTES = env_int("RECS_ONLINE_INTERVAL_MINUTES", 15)
# A new full version activates itself unless its HR@10 is lower than the active one's by more than this.
RECS_ACTIVATION_MARGIN = float(env_str("RECS_ACTIVATION_MARGIN", "0.02") or "0.02")
RECS_EVAL_USERS = env_int("RECS_EVAL_USERS", 20_000)  # users whose last item is held out
# Popularity debiasing of the related lists (recommendations/training/rerank.py): the
# betas tried on the validation split, and how many standard errors of validation HR@10
# a beta may lose against the best one to be chosen for more coverage (0: the most accurate).
RECS_DEBIAS_BETAS = env_floats("RECS_DEBIAS_BETAS", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0])
RECS_DEBIAS_TOLERANCE_SE = env_float("RECS_DEBIAS_TOLERANCE_SE", 1.0)
RECS_KEEP_VERSIONS = env_int("RECS_KEEP_VERSIONS", 3)  # retired versions kept for rollback
RECS_STALE_RUN_HOURS = env_int("RECS_STALE_RUN_HOURS", 6)
RECS_TRENDING_HALF_LIFE_DAYS = env_int("RECS_TRENDING_HALF_LIFE_DAYS", 7)
RECS_INTERACTION_WEIGHTS = (1.0, 3.0, 5.0)  # view, add to cart, purchase
RECS_MODEL_PARAMS = {
    "epochs": env_int("RECS_EPOCHS", 6),
    "dim": env_int("RECS_DIM", 64),
    "max_examples": env_int("RECS_MAX_EXAMPLES", 4_000_000),  # the training budget, all epochs together
    "min_steps": env_int("RECS_MIN_STEPS", 600),
}

# --- Rate limits (crm/rate_limits.py) --------------------------------------------
# `requests/period` per project key, counted in the cache (shared with REDIS_URL,
# per process without). A project's own number (console: Projects) replaces the
# requests of its key's limit. The benchmarks offer 1,500 collector requests/s
# (bench/ingest.py) and ~2,500 recommendation requests/s (bench/serving.py) on one
# key: the defaults leave them twice that.
RATE_LIMIT_WRITE_KEY = env_rate("RATE_LIMIT_WRITE_KEY", "50000/10s")
RATE_LIMIT_SECRET_KEY = env_rate("RATE_LIMIT_SECRET_KEY", "50000/10s")
# Requests with an unknown, malformed or missing key, per client address.
RATE_LIMIT_UNKNOWN_KEY = env_rate("RATE_LIMIT_UNKNOWN_KEY", "100/60s")
# The client address for the limits and the console's login lockout: REMOTE_ADDR,
# or behind a proxy the header it sets (X-Forwarded-For, X-Real-IP): never set
# this without such a proxy, as clients can send any header. Of a list, the entry
# the CLIENT_IP_PROXY_COUNT-th proxy from here added (the ones left of it are the client's to write).
_client_ip_header = (env_str("CLIENT_IP_HEADER") or "").strip()
CLIENT_IP_HEADER = "HTTP_" + _client_ip_header.upper().replace("-", "_") if _client_ip_header else ""
CLIENT_IP_PROXY_COUNT = env_int("CLIENT_IP_PROXY_COUNT", 1)
if CLIENT_IP_PROXY_COUNT < 1:
    raise ImproperlyConfigured(f"CLIENT_IP_PROXY_COUNT must be 1 or more, got {CLIENT_IP_PROXY_COUNT}")

# --- Console login lockout (django-axes) ---------------------------------------------
# AXES_FAILURE_LIMIT wrong passwords for one user name from one address lock that
# pair out for AXES_COOLOFF_MINUTES; other users and addresses are unaffected.
# Superusers see attempts and lockouts in the console (Axes), and may delete one to unlock.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "crm.rate_limits.request_client_address"
AXES_ENABLE_ADMIN = False  # registered in crm/admin.py, for superusers only
AXES_VERBOSE = False

# --- Auth, i18n ----------------------------------------------------------------
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

# --- API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["crm.authentication.SecretKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["crm.authentication.HasProject"],
    "DEFAULT_THROTTLE_CLASSES": ["crm.authentication.SecretKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "crm.api.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}

# --- Security (check --deploy is clean with production values) ---------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The console's Content-Security-Policy (config/security.py): no inline script or
# style anywhere in it; product images come from the catalog's own URLs.
CONSOLE_CONTENT_SECURITY_POLICY = env_str(
    "CONSOLE_CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health checks and SDK calls over plain HTTP inside a private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# --- Uploads ------------------------------------------------------------------------
# A catalog file (API or console) larger than this is answered 413 before it is
# stored: on its Content-Length, and while it streams in (catalog/middleware.py).
CATALOG_UPLOAD_MAX_BYTES = env_int("CATALOG_UPLOAD_MAX_BYTES", 100 * 1024 * 1024)
# A request body other than files (JSON, form fields): the collectors take 500 KB at
# most (ingestion.spec), the APIs less. Django's default.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
# Uploaded files up to this size stay in memory, larger ones go to a temporary file:
# per request thread, so keep it small. Django's default.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FILES = 10  # the catalog upload takes one

# --- Local provider server (localproviders/, README "Local providers") -----------------
# Stand-ins for SendGrid, FCM (with Google's OAuth token endpoint), Twilio and a
# webhook receiver under /_local/, so that the real client libraries run in the
# quickstart and the tests. On with DEBUG (make run), off in production: off, every
# /_local/ path answers 404.
LOCAL_PROVIDERS = env_bool("LOCAL_PROVIDERS", DEBUG)
# How long the test hook `slow-` makes the local server wait before it answers.
LOCAL_PROVIDERS_SLOW_MS = env_int("LOCAL_PROVIDERS_SLOW_MS", 15_000)
# The secret the local webhook receiver verifies signatures with (Standard Webhooks, whsec_ + base64).
LOCAL_PROVIDERS_WEBHOOK_SECRET = (
    env_str("LOCAL_PROVIDERS_WEBHOOK_SECRET") or "whsec_ZW5nYWdlLWxvY2FsLXByb3ZpZGVyLXdlYmhvb2tzISE="
)
# How the local SendGrid and Twilio post their receipts back (localproviders/receipts.py):
# "background" (a thread, after the response), "manual" (queued until a test flushes them), "off".
LOCAL_PROVIDERS_RECEIPTS = env_str("LOCAL_PROVIDERS_RECEIPTS", "background") or "background"
if LOCAL_PROVIDERS_RECEIPTS not in ("background", "manual", "off"):
    raise ImproperlyConfigured(
        f"LOCAL_PROVIDERS_RECEIPTS must be background, manual or off, got {LOCAL_PROVIDERS_RECEIPTS!r}"
    )
LOCAL_PROVIDERS_RECEIPTS_DELAY_MS = env_int("LOCAL_PROVIDERS_RECEIPTS_DELAY_MS", 500)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
