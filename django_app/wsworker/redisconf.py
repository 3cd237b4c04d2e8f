"""Which Redis servers the channel layer uses, and a client on each: the one place that knows.

The project's settings name the servers once, as channels_redis host entries in
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]. Everything else that talks to Redis
directly (the worker's watcher, both /readyz probes, a census) reads them here,
so it follows the same topology as the layer:

- one entry with an "address" (single Redis);
- one entry with "sentinels" + "master_name" (Sentinel: the current master is
  asked of the Sentinels on every connect, exactly as channels_redis does);
- several entries (shards: channels_redis picks one per group by a consistent hash).

API: hosts(), label(host); connect(host, timeout) / connect_sync(host, timeout) for a
client of one's own; probe_client(host) / probe_client_sync(host) for the probes' shared one.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel  # noqa: F401  (submodules: lib.sentinel below)
import redis.sentinel  # noqa: F401
from channels_redis.utils import decode_hosts
from django.conf import settings

# Connection settings of the layer that a probe or watcher replaces with its own.
_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
PROBE_TIMEOUT = 2.0
_probe_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()
_probe_clients_sync: dict = {}
_sync_lock = threading.Lock()


def hosts(alias: str = "default") -> list[dict]:
    """The host entries of a Redis channel layer (as channels_redis decodes them); [] otherwise."""
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get(alias, {})
    if "channels_redis" not in layer.get("BACKEND", ""):
        return []
    return decode_hosts(layer.get("CONFIG", {}).get("hosts"))


def is_sentinel(host: dict) -> bool:
    return "master_name" in host


def label(host: dict) -> str:
    """A name for logs and /readyz that never contains a password."""
    if is_sentinel(host):
        where = ",".join(f"{h}:{p}" for h, p in host["sentinels"])
        return f"sentinel:{host['master_name']}@{where}"
    if "address" in host:
        parts = urlsplit(host["address"])
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return f"redis://{host.get('host', 'localhost')}:{host.get('port', 6379)}"


def _build(lib, host: dict, timeout: float | None):
    """(client, sentinel or None) for one host entry, with the probe's timeouts."""
    kwargs = {k: v for k, v in host.items() if k not in _TIMEOUTS}
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    if is_sentinel(host):
        sentinels = kwargs.pop("sentinels")
        name = kwargs.pop("master_name")
        sentinel_kwargs = dict(kwargs.pop("sentinel_kwargs", None) or {})
        for key in _TIMEOUTS:
            sentinel_kwargs.setdefault(key, timeout)
        sentinel = lib.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        return sentinel.master_for(name, **kwargs), sentinel
    if "address" in host:
        return lib.Redis.from_url(kwargs.pop("address"), **kwargs), None
    return lib.Redis(**kwargs), None


@contextlib.asynccontextmanager
async def connect(host: dict, timeout: float | None = 2.0):
    """An asyncio client on the server that serves `host` now (Sentinel: the master).

    A Sentinel client finds the master again on every new connection, so after a
    failover a dropped connection reconnects to the new master. Everything it
    opened (Sentinel connections too) is closed on exit.
    """
    client, sentinel = _build(aioredis, host, timeout)
    try:
        yield client
    finally:
        await client.aclose(close_connection_pool=True)
        for each in getattr(sentinel, "sentinels", ()):
            await each.aclose(close_connection_pool=True)


@contextlib.contextmanager
def connect_sync(host: dict, timeout: float | None = 2.0):
    """connect() for synchronous code (the web tier's /readyz view)."""
    client, sentinel = _build(redis, host, timeout)
    try:
        yield client
    finally:
        client.connection_pool.disconnect()
        for each in getattr(sentinel, "sentinels", ()):
            each.connection_pool.disconnect()


def _key(host: dict) -> str:
    return repr(sorted(host.items()))


def probe_client(host: dict):
    """The asyncio client /readyz reuses for `host` on this event loop.

    A fresh client per probe costs, with Sentinel, a DNS lookup and a connection
    to a Sentinel plus another to the master: seconds on a loaded host, where a
    reused connection costs one PING. After a failover the dead connection fails
    one probe; redis-py then connects again, asking the Sentinels for the new master.
    """
    per_loop = _probe_clients.setdefault(asyncio.get_running_loop(), {})
    key = _key(host)
    if key not in per_loop:
        per_loop[key] = _build(aioredis, host, PROBE_TIMEOUT)[0]
    return per_loop[key]


def probe_client_sync(host: dict):
    """probe_client() for synchronous code: one per process (redis-py's pool is thread-safe)."""
    key = _key(host)
    with _sync_lock:
        if key not in _probe_clients_sync:
            _probe_clients_sync[key] = _build(redis, host, PROBE_TIMEOUT)[0]
        return _probe_clients_sync[key]
