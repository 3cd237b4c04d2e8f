"""BENCH-ONLY BASELINE settings: the seed's tutorial stack, kept minimal.

Mirrors the Channels tutorial: default `channels_redis.core.RedisChannelLayer`
(capacity 100, expiry 60), AuthMiddlewareStack, no persistence. The one
deviation is `socket_timeout: None` on the Redis host: with redis-py 8 the
layer's idle receive loop otherwise dies after 5 s (channels_redis#422), which
would measure a crash rather than the seed's throughput.
"""
import os
import secrets

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
# A throwaway key per process: the baseline signs nothing that must survive.
SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
# The tutorial uses sqlite; sockets without a session cookie never touch it.
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ASGI_APPLICATION = "bench.baseline.asgi.application"
USE_TZ = True
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": os.environ.get("BENCH_BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    "socket_timeout": None,
                }
            ],
        },
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
