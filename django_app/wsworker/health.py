"""HTTP on a ws worker: /healthz and /readyz answered without Django.

Kept outside Django's request cycle so probes stay cheap and keep answering
even when the ORM, middleware or database is in trouble. Every other path is
handed to the wrapped app, so `runserver` (which serves everything via ASGI)
still works. Wrap the project's HTTP app: `"http": WorkerHealthApp(django_asgi_app)`.

- /healthz (liveness): 200 with this worker's counters.
- /readyz (readiness): 503 while draining, at WS_MAX_SOCKETS (wsworker.admission),
  or when no Redis server of the channel layer answers a PING within TIMEOUT
  (Sentinel: while no master is reachable, i.e. during a failover); 200
  "degraded" while some shards do not answer; 200 "ok" otherwise. It recovers
  by itself once Redis answers again.
"""
import asyncio
import json

from . import admission, redisconf, registry

TIMEOUT = 2.0
PATHS = ("/healthz", "/readyz")  # answered here; wsworker.access logs them at DEBUG when they pass


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


async def _ping(host: dict) -> str | None:
    try:
        await asyncio.wait_for(redisconf.probe_client(host).ping(), TIMEOUT)
        return None
    except Exception as exc:
        return _describe(exc)


async def redis_problems() -> dict[str, str]:
    """{server label: why it does not answer} for every server of the channel layer
    (Sentinel: the current master), probed at once, each within TIMEOUT."""
    hosts = redisconf.hosts()
    found = await asyncio.gather(*(_ping(h) for h in hosts))
    return {redisconf.label(h): why for h, why in zip(hosts, found) if why}


def readiness(problems: dict[str, str], servers: int) -> tuple[bool, str]:
    """(ready, status) from the probe: not ready only when NO server of the layer answers.

    With shards, one lost shard stops only the rooms hashed to it, on every worker
    alike: failing every worker's readiness would turn that into an outage of all
    rooms, so the status says "degraded" and the worker stays in rotation.
    """
    if not problems:
        return True, "ok"
    if len(problems) < servers:
        return True, "degraded"
    return False, "error"


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
        if scope["type"] == "http" and path in PATHS:
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
                    f"{admission.open_sockets} sockets open, {admission.describe_limit()}")})
            problems = await redis_problems()
            ready, status = readiness(problems, len(redisconf.hosts()))
            body = {"status": status, "worker": registry.worker_id()}
            if problems:
                body["reason"] = "redis: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
                body["redis"] = problems
            return await _respond(send, 200 if ready else 503, body)
        return await self.app(scope, receive, send)
