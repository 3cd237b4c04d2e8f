"""Recover this worker's channel layer after Redis restarts or drops out.

channels_redis's pub/sub layer holds one SUBSCRIBE connection per process. When
Redis restarts, the subscriptions on it are gone and (channels_redis 4.3 with
redis-py 8) are not restored: group_send still succeeds, but this worker's
sockets silently stop receiving. A watcher per process polls Redis's `run_id`;
when Redis was unreachable or its run_id changed, the layer is flushed and the
app's resync callbacks run (wsworker.hooks.on_resync: chat's Rooms subscribe
again on a fresh connection, then read from Postgres what was published
meanwhile). Sockets stay open.

Only a Redis channel layer is watched; under any other layer this does nothing.
"""
import asyncio
import logging

from channels.layers import get_channel_layer
from redis import asyncio as aioredis

from . import hooks, metrics
from .health import channel_layer_redis_url


logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_task: asyncio.Task | None = None
# Bumped on every resync. A Room that finishes subscribing under an older
# generation subscribes again: its channel may be on the connection the flush dropped.
generation = 0


def ensure_started() -> None:
    """Start the watcher on the running loop once per process (the server calls it)."""
    global _task
    if channel_layer_redis_url() is None:
        return
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_watch(), name="wsworker-layerwatch")


async def _watch() -> None:
    client = aioredis.Redis.from_url(channel_layer_redis_url(), socket_timeout=2, socket_connect_timeout=2)
    known_run_id, unreachable = None, False
    while True:
        try:
            run_id = (await client.info("server")).get("run_id")
        except Exception as exc:
            if asyncio.current_task().cancelling():
                # redis-py may turn our cancellation into a connection error: honour it,
                # or the loop (and a worker's shutdown) would wait on us forever.
                raise asyncio.CancelledError from exc
            metrics.layer.up = False
            if not unreachable:
                logger.warning("channel layer: Redis unreachable (%s); sockets resync when it returns", exc)
            unreachable = True
        else:
            if unreachable or (known_run_id is not None and run_id != known_run_id):
                await _resync("came back" if unreachable else "restarted")
            known_run_id, unreachable = run_id, False
            metrics.layer.up = True
        await asyncio.sleep(POLL_SECONDS)


async def _resync(what: str) -> None:
    global generation
    generation += 1
    metrics.redis_resyncs[what] += 1
    logger.warning("channel layer: Redis %s; resubscribing (generation %d)", what, generation)
    try:
        await get_channel_layer().flush()
    except Exception:
        logger.warning("channel layer: flush failed during resync", exc_info=True)
    await hooks.run_resync()
