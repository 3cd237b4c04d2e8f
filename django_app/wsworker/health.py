"""HTTP on a daphne ws worker: /healthz and /readyz answered without Django.

Kept outside Django's request cycle so probes stay cheap and keep answering
even when the ORM, middleware or database is in trouble. Every other path is
handed to Django, so `runserver` (which serves everything via ASGI) still works.
"""
import json

from . import health, registry
from .consumers import worker_id


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
    def __init__(self, django_app):
        self.django_app = django_app

    async def __call__(self, scope, receive, send):
        path = scope.get("path")
        if scope["type"] == "http" and path in ("/healthz", "/readyz"):
            if path == "/healthz":
                return await _respond(
                    send,
                    200,
                    {
                        "status": "ok",
                        "worker": worker_id(),
                        "sockets": registry.count(),
                        "refusals": dict(registry.refusals),
                        "deliveries": dict(registry.deliveries),
                    },
                )
            if registry.state.draining:
                return await _respond(send, 503, {"status": "draining", "reason": "worker is draining"})
            problem = await health.redis_async()
            if problem:
                return await _respond(send, 503, {"status": "error", "reason": f"redis: {problem}"})
            return await _respond(send, 200, {"status": "ok", "worker": worker_id()})
        return await self.django_app(scope, receive, send)
