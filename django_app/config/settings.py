"""Settings for every tier, read ONLY from the process environment.

The names and defaults mirror .env.example (the single source of truth). We never
read a .env file here: compose, k8s and the native runner inject the environment,
so a stray file on disk cannot silently change production behaviour.
"""
import logging
from pathlib import Path
from urllib.parse import quote

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# --- core -------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# Earlier keys, still accepted for what they signed (sessions, password reset links)
# while DJANGO_SECRET_KEY is rotated: docs/security.md.
SECRET_KEY_FALLBACKS = [k.strip() for k in env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[]) if k.strip()]
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is empty: set it in the environment (`make env` "
            "generates one), or set DEBUG=true for a throw-away development key."
        )
    SECRET_KEY = "insecure-debug-only-key-never-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list(
    "CSRF_TRUSTED_ORIGINS", default=["http://localhost:8080", "http://127.0.0.1:8080"]
)

INSTALLED_APPS = [
    "daphne",
    "channels",
    "chat",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
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

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# --- TLS (terminated by nginx / the ingress in front of us) ----------------
DJANGO_TLS = env.bool("DJANGO_TLS", default=False)
if DJANGO_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31536000)
    # The proxy terminates TLS and redirects plain HTTP itself; redirecting here
    # too would loop whenever X-Forwarded-Proto is missing (health probes).
    SECURE_SSL_REDIRECT = False
    # Subdomain/preload HSTS policy belongs to whoever owns the parent domain.
    SILENCED_SYSTEM_CHECKS = ["security.W008", "security.W005", "security.W021"]

# --- Postgres (psycopg 3 with Django's connection pool) ---------------------
_pool = {
    "min_size": env.int("DB_POOL_MIN_SIZE", default=1),
    "max_size": env.int("DB_POOL_MAX_SIZE", default=10),
    "timeout": env.float("DB_POOL_TIMEOUT", default=10),
}
if env.str("DATABASE_URL", default=""):
    _db = env.db_url("DATABASE_URL")
else:
    _db = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": env.str("POSTGRES_HOST", default="db"),
        "PORT": env.str("POSTGRES_PORT", default="5432"),
        "USER": env.str("POSTGRES_USER", default="chat"),
        "PASSWORD": env.str("POSTGRES_PASSWORD", default=""),
        "NAME": env.str("POSTGRES_DB", default="chat"),
    }
_db["ENGINE"] = "django.db.backends.postgresql"
# The pool owns connection reuse; Django requires CONN_MAX_AGE=0 with it.
_db["CONN_MAX_AGE"] = 0
# With the pool this makes Django pass ConnectionPool.check_connection (one empty
# query per checkout): after Postgres restarted or dropped the app's connections,
# the pool hands out a live connection instead of each dead one in turn (one failed
# request, message or gap fill per pooled connection).
_db["CONN_HEALTH_CHECKS"] = True
_db["OPTIONS"] = {**_db.get("OPTIONS", {}), "pool": _pool}
DATABASES = {"default": _db}

# --- Redis (channel layer) --------------------------------------------------
# REDIS_MODE picks the topology; channels_redis itself does the work: a Sentinel
# host entry ("sentinels" + "master_name") finds the current master, several host
# entries are shards chosen by a consistent hash of the group name.
REDIS_MODE = env.str("REDIS_MODE", default="single")
_redis_password = env.str("REDIS_PASSWORD", default="")
REDIS_URL = env.str("REDIS_URL", default="")
if not REDIS_URL:
    _redis_auth = f":{quote(_redis_password, safe='')}@" if _redis_password else ""
    REDIS_URL = "redis://{auth}{host}:{port}/{db}".format(
        auth=_redis_auth,
        host=env.str("REDIS_HOST", default="redis"),
        port=env.int("REDIS_PORT", default=6379),
        db=env.int("REDIS_DB", default=0),
    )
_layer_connection = {
    # redis-py 8 turns an idle subscriber read into a timeout after
    # 5 s and channels_redis then drops messages (channels_redis#422).
    "socket_timeout": None,
    "socket_connect_timeout": 5,
    # Detects a half-dead connection on an otherwise idle subscriber.
    "health_check_interval": 30,
    # RESP2, redis-py's default before 8: a pub/sub message is then a plain reply.
    # Under RESP3 (8's default) each one also goes through the push-notification
    # handlers, which format it into a debug line whether or not it is logged:
    # ~2 us per message read on a worker (docs/benchmarks.md). Nothing here uses
    # what RESP3 adds (client-side caching, maintenance notifications).
    "protocol": 2,
}


def _with_password(url: str) -> str:
    """A shard URL without credentials gets REDIS_PASSWORD (kept out of REDIS_SHARD_URLS)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"REDIS_SHARD_URLS: {url!r} is not a redis:// or rediss:// URL")
    if "@" in rest.split("/", 1)[0] or not _redis_password:
        return url
    return f"{scheme}://:{quote(_redis_password, safe='')}@{rest}"


def _sentinel_address(item: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port")
    return host, int(port)


if REDIS_MODE == "single":
    _layer_hosts = [{"address": REDIS_URL, **_layer_connection}]
elif REDIS_MODE == "sentinel":
    _sentinels = [_sentinel_address(s) for s in env.list("REDIS_SENTINELS", default=[]) if s.strip()]
    if not _sentinels:
        raise ImproperlyConfigured("REDIS_MODE=sentinel needs REDIS_SENTINELS (host:port,host:port,...)")
    _layer_hosts = [{
        "sentinels": _sentinels,
        "master_name": env.str("REDIS_SENTINEL_MASTER", default="chat"),
        # Connections to the Sentinels themselves: short timeouts, so a dead
        # Sentinel costs a discovery 1 s, not a hang.
        "sentinel_kwargs": {
            "password": env.str("REDIS_SENTINEL_PASSWORD", default="") or None,
            "socket_timeout": 1,
            "socket_connect_timeout": 1,
        },
        "password": _redis_password or None,
        "db": env.int("REDIS_DB", default=0),
        **_layer_connection,
    }]
elif REDIS_MODE == "sharded":
    _shards = [u.strip() for u in env.list("REDIS_SHARD_URLS", default=[]) if u.strip()]
    if len(_shards) < 2:
        raise ImproperlyConfigured("REDIS_MODE=sharded needs at least two URLs in REDIS_SHARD_URLS")
    _layer_hosts = [{"address": _with_password(u), **_layer_connection} for u in _shards]
else:
    raise ImproperlyConfigured(f"REDIS_MODE must be single, sentinel or sharded, not {REDIS_MODE!r}")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            # The one list of Redis servers: the layer, the worker's watcher and
            # both /readyz probes read it (wsworker.redisconf).
            "hosts": _layer_hosts,
            "prefix": env.str("CHANNEL_LAYER_PREFIX", default="chat"),
        },
    }
}

# --- static files (whitenoise serves them from gunicorn) --------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- chat behaviour ---------------------------------------------------------
CHAT_ALLOW_ANONYMOUS = env.bool("CHAT_ALLOW_ANONYMOUS", default=True)
WS_ALLOW_MISSING_ORIGIN = env.bool("WS_ALLOW_MISSING_ORIGIN", default=True)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=2000)
CHAT_HISTORY_SIZE = env.int("CHAT_HISTORY_SIZE", default=50)
CHAT_RESUME_MAX = env.int("CHAT_RESUME_MAX", default=1000)
CHAT_ROOM_CACHE = env.int("CHAT_ROOM_CACHE", default=256)
CHAT_REORDER_WAIT_MS = env.int("CHAT_REORDER_WAIT_MS", default=200)
CHAT_ROOM_MAX_BACKLOG = env.int("CHAT_ROOM_MAX_BACKLOG", default=10000)
CHAT_PUBLISH_TIMEOUT_MS = env.int("CHAT_PUBLISH_TIMEOUT_MS", default=1000)
if CHAT_PUBLISH_TIMEOUT_MS < 1:
    raise ImproperlyConfigured(f"CHAT_PUBLISH_TIMEOUT_MS must be at least 1, not {CHAT_PUBLISH_TIMEOUT_MS}")
CHAT_STORE_LINGER_MS = env.int("CHAT_STORE_LINGER_MS", default=10)
if not 0 <= CHAT_STORE_LINGER_MS <= 1000:
    raise ImproperlyConfigured(
        f"CHAT_STORE_LINGER_MS must be 0..1000 (milliseconds; 0 turns it off), not {CHAT_STORE_LINGER_MS}")
CHAT_RATE_PER_SEC = env.float("CHAT_RATE_PER_SEC", default=5)
CHAT_RATE_BURST = env.int("CHAT_RATE_BURST", default=20)
CHAT_RATE_MAX_VIOLATIONS = env.int("CHAT_RATE_MAX_VIOLATIONS", default=20)
TOKEN_TTL_HOURS = env.int("TOKEN_TTL_HOURS", default=720)
CHAT_AUTH_RECHECK_SECONDS = env.int("CHAT_AUTH_RECHECK_SECONDS", default=30)
if CHAT_AUTH_RECHECK_SECONDS < 0:
    raise ImproperlyConfigured(
        f"CHAT_AUTH_RECHECK_SECONDS must be 0 (off) or a number of seconds, not {CHAT_AUTH_RECHECK_SECONDS}")
WS_CONNECT_TIMEOUT = env.int("WS_CONNECT_TIMEOUT", default=3)
if WS_CONNECT_TIMEOUT < 1:
    raise ImproperlyConfigured(f"WS_CONNECT_TIMEOUT must be at least 1 (whole seconds), not {WS_CONNECT_TIMEOUT}")
WS_PING_INTERVAL = env.int("WS_PING_INTERVAL", default=20)
WS_PING_TIMEOUT = env.int("WS_PING_TIMEOUT", default=30)
WS_MAX_MESSAGE_BYTES = env.int("WS_MAX_MESSAGE_BYTES", default=65536)
WS_MAX_SEND_BUFFER_BYTES = env.int("WS_MAX_SEND_BUFFER_BYTES", default=1048576)
WS_DRAIN_SECONDS = env.float("WS_DRAIN_SECONDS", default=10)
WS_APP_CLOSE_TIMEOUT = env.int("WS_APP_CLOSE_TIMEOUT", default=10)
WS_EVENT_LOOP = env.str("WS_EVENT_LOOP", default="uvloop")
if WS_EVENT_LOOP not in ("uvloop", "asyncio"):
    raise ImproperlyConfigured(f"WS_EVENT_LOOP must be uvloop or asyncio, not {WS_EVENT_LOOP!r}")
WS_LOOP_STALL_SECONDS = env.float("WS_LOOP_STALL_SECONDS", default=10)
if WS_LOOP_STALL_SECONDS < 0:
    raise ImproperlyConfigured(f"WS_LOOP_STALL_SECONDS must be 0 (off) or more, not {WS_LOOP_STALL_SECONDS}")
WS_GC_THRESHOLD = env.int("WS_GC_THRESHOLD", default=10000)
if WS_GC_THRESHOLD < 700:
    raise ImproperlyConfigured(f"WS_GC_THRESHOLD must be at least 700 (CPython's default), not {WS_GC_THRESHOLD}")
# Scaling the ws tier (docs/operations.md "Scaling WebSocket workers").
WS_MAX_SOCKETS = env.int("WS_MAX_SOCKETS", default=10000)
if WS_MAX_SOCKETS < 1:
    raise ImproperlyConfigured(f"WS_MAX_SOCKETS must be at least 1, not {WS_MAX_SOCKETS}")
WS_BALANCE_TOLERANCE = env.float("WS_BALANCE_TOLERANCE", default=0.1)
if WS_BALANCE_TOLERANCE < 0:
    raise ImproperlyConfigured(f"WS_BALANCE_TOLERANCE must be 0 or more (0.1 = 10 %), not {WS_BALANCE_TOLERANCE}")
WS_REBALANCE_RATE = env.float("WS_REBALANCE_RATE", default=50)
if WS_REBALANCE_RATE < 0:
    raise ImproperlyConfigured(f"WS_REBALANCE_RATE must be 0 (off) or more, not {WS_REBALANCE_RATE}")

# --- metrics (docs/operations.md) ---------------------------------------------
# ws workers serve /metrics on WS_METRICS_PORT (wsworker.metrics), on BIND_HOST.
WS_METRICS_PORT = env.int("WS_METRICS_PORT", default=9100)
BIND_HOST = env.str("BIND_HOST", default="0.0.0.0")
# gunicorn (services/gunicorn.conf.py) sets PROMETHEUS_MULTIPROC_DIR when WEB_METRICS_PORT
# is on: then every request is counted by view and status (django-prometheus, in
# prometheus_client's multiprocess mode) and the arbiter serves the sum on that port.
if env.str("PROMETHEUS_MULTIPROC_DIR", default=""):
    MIDDLEWARE = [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        *MIDDLEWARE,
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ]

# --- logging ------------------------------------------------------------------
# Python warnings (a library's UserWarning) go through logging too, so with
# LOG_FORMAT=json every line a process writes is one JSON object.
logging.captureWarnings(True)
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
# plain: one human line per record; json: one JSON object per line (python-json-logger)
# with the same fields, for log shippers. The token redaction applies to both.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_tokens": {"()": "chat.logfilters.RedactTokens"},
        "client_refusal": {"()": "chat.logfilters.RefusalWithoutTraceback"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["redact_tokens"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": LOG_LEVEL, "propagate": True},
        "daphne": {"level": LOG_LEVEL, "propagate": True},
        "chat": {"level": LOG_LEVEL, "propagate": True},
        "wsworker": {"level": LOG_LEVEL, "propagate": True},
        "django.security.DisallowedHost": {"filters": ["client_refusal"], "propagate": True},
    },
}
