"""Dependency probes of the web /readyz view (the ws worker has its own: wsworker.health).

Redis servers come from the channel layer's settings (wsworker.redisconf), so the
probe follows the layer's topology: single, Sentinel or shards.

Each probe has a short timeout and says why it failed in a short string:
readiness must answer quickly, never hang on a dead backend.
"""
import psycopg
from django.conf import settings
from wsworker import redisconf
from wsworker.health import readiness

from . import dbauth
from .delivery.db import connect_kwargs

TIMEOUT = 2.0


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def redis_sync() -> tuple[bool, str]:
    """(ready, "ok" | why): PING every Redis server of the channel layer (Sentinel:
    the current master; shards: each), as the ws worker's /readyz does
    (wsworker.health.readiness: not ready only when none answers)."""
    hosts = redisconf.hosts()
    problems = {}
    for host in hosts:
        try:
            redisconf.probe_client_sync(host).ping()
        except Exception as exc:
            problems[redisconf.label(host)] = _describe(exc)
    ready, status = readiness(problems, len(hosts))
    if not problems:
        return True, "ok"
    return ready, f"{status}: " + "; ".join(f"{k}: {v}" for k, v in problems.items())


def database_error(alias: str = "default") -> Exception | None:
    """SELECT 1 over a fresh connection with connect_timeout; the exception, if any.

    Deliberately not through Django's pool: a pool checkout waits DB_POOL_TIMEOUT
    (10 s) when the database is gone, far longer than a probe may take, and it
    hides the server's reason (a wrong password) behind a PoolTimeout.
    """
    kwargs = connect_kwargs(max(2, TIMEOUT), alias)
    try:
        with psycopg.connect(**kwargs) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return exc


def database(alias: str = "default") -> str | None:
    """None when Postgres answers; else a reason, in plain words for a refused password."""
    exc = database_error(alias)
    if exc is None:
        return None
    if dbauth.is_auth_failure(exc):
        return dbauth.explain(settings.DATABASES[alias].get("USER"))
    return _describe(exc)
