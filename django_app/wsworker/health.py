"""HTTP on a ws worker: /healthz and /readyz answered without Django.

Kept outside Django's request cycle so probes stay cheap and keep answering
even when the ORM, middleware or database is in trouble. Every other path is
handed to the wrapped app, so `runserver` (which serves everything via ASGI)
still works. Wrap the project's HTTP app: `"http": WorkerHealthApp(django_asgi_app)`.

- /healthz (liveness): 200 with this worker's counters.
- /readyz (readiness): 503 while draining, at WS_MAX_SOCKETS (wsworker.admission),
  or when the Redis channel layer does not answer a PING within TIMEOUT; 200 otherwise.
"""
import json

import redis.asyncio as aioredis
from django.conf import settings

from . import admission, registry

TIMEOUT = 2.0


def channel_layer_redis_url() -> str | None:
    """The first Redis address of the default channel layer, if it is a Redis layer."""
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    hosts = layer.get("CONFIG", {}).get("hosts") or []
    if not hosts or "redis" not in layer.get("BACKEND", ""):
        return None
    host = hosts[0]
    if isinstance(host, dict):
        return host.get("address")
    return host if isinstance(host, str) else "redis://{}:{}".format(*host)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


async def redis_problem(url: str | None = None) -> str | None:
    """None when the channel layer's Redis answers a PING within TIMEOUT, else why not."""
    url = url or channel_layer_redis_url()
    if url is None:
        return None  # not a Redis layer: nothing to check
    client = aioredis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return _describe(exc)
    finally:
        await client.aclose()


async def _respond(send, status: int, body: dict):
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class WorkerHealthApp:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] == "http" and path in ("/healthz", "/readyz"):
            if path == "/healthz":
                return await _respond(
                    send,
                    200,
                    {
                        "status": "ok",
                        "worker": registry.worker_id(),
                        "sockets": registry.count(),
                        "refusals": dict(registry.refusals),
                        "deliveries": dict(registry.deliveries),
                        "admission": admission.status(),
                        "rebalanced": dict(registry.rebalanced),
                    },
                )
            if registry.state.draining:
                return await _respond(send, 503, {"status": "draining", "reason": "worker is draining"})
            if admission.full():
                return await _respond(send, 503, {"status": "full", "reason": (
                    f"{admission.open_sockets} sockets open, WS_MAX_SOCKETS={admission.limit()}")})
            problem = await redis_problem()
            if problem:
                return await _respond(send, 503, {"status": "error", "reason": f"redis: {problem}"})
            return await _respond(send, 200, {"status": "ok", "worker": registry.worker_id()})
        return await self.app(scope, receive, send)
