"""Recover this worker's channel layer after Redis restarts or drops out.

channels_redis's pub/sub layer holds one SUBSCRIBE connection per process. When
Redis restarts, the subscriptions on it are gone and (channels_redis 4.3 with
redis-py 8) are not restored: group_send still succeeds, but this worker's
sockets silently stop receiving. A watcher per process polls Redis's `run_id`;
when Redis was unreachable or its run_id changed, every socket of this worker is
closed with 1012 and the layer is flushed. Clients reconnect at once, subscribe
afresh and resume with `?after=`, and nothing is lost because every message is
persisted before it is broadcast.
"""
import asyncio
import logging

from channels.layers import get_channel_layer
from django.conf import settings
from redis import asyncio as aioredis

from . import protocol, registry

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_task: asyncio.Task | None = None
# Bumped on every resync. A consumer remembers the generation it connected under;
# one that finishes connecting after a resync began closes itself (its channel
# may have been subscribed on the connection the flush threw away).
generation = 0


def ensure_started() -> None:
    """Start the watcher on the running loop once per process (chat.wsserver calls it)."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        _task = loop.create_task(_watch(), name="chat-layerwatch")


async def _watch() -> None:
    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    known_run_id, unreachable = None, False
    while True:
        try:
            run_id = (await client.info("server")).get("run_id")
        except Exception as exc:
            if asyncio.current_task().cancelling():
                # redis-py may turn our cancellation into a connection error: honour it,
                # or the loop (and a worker's shutdown) would wait on us forever.
                raise asyncio.CancelledError from exc
            if not unreachable:
                logger.warning("channel layer: Redis unreachable (%s); sockets resync when it returns", exc)
            unreachable = True
        else:
            if unreachable or (known_run_id is not None and run_id != known_run_id):
                await _resync("came back" if unreachable else "restarted")
            known_run_id, unreachable = run_id, False
        await asyncio.sleep(POLL_SECONDS)


def stale(generation_at_connect: int) -> bool:
    return generation_at_connect != generation


async def _resync(what: str) -> None:
    global generation
    generation += 1
    logger.warning("channel layer: Redis %s; resubscribing (generation %d)", what, generation)
    try:
        # Drop the dead subscriber connection first: the sockets closed below reconnect
        # at once, and their group_add must land on a fresh connection, not be wiped.
        await get_channel_layer().flush()
    except Exception:
        logger.warning("channel layer: flush failed during resync", exc_info=True)
    # Listed after the flush: this also catches sockets that connected while it ran.
    consumers = [c for c in list(registry.live) if stale(c.layer_generation)]
    logger.warning("channel layer: closing %d socket(s) with %d so they resubscribe and resume",
                   len(consumers), protocol.CLOSE_RESTART)
    await registry.close_sockets(consumers, protocol.CLOSE_RESTART, logger)
