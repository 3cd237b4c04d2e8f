"""Recover this worker's channel layer after a Redis server restarts, drops out or fails over.

channels_redis's pub/sub layer holds one SUBSCRIBE connection per process and
Redis server. When that server restarts, the subscriptions on it are gone and
(channels_redis 4.3 with redis-py 8) are not restored: group_send still
succeeds, but this worker's sockets silently stop receiving. A Sentinel failover
is the same event seen from the worker: channels_redis hands Sentinel discovery
to redis-py's SentinelConnectionPool, which reconnects a broken connection to
whatever master the Sentinels name, but nothing subscribes again on the new
master, and whatever was published between the old master's death and the new
connection went nowhere.

So one watcher task per server of the layer (wsworker.redisconf.hosts(): one,
the Sentinel-managed master, or one per shard) asks that server its `run_id`
every POLL_SECONDS. A promoted replica is another process with another run_id,
so a failover looks like a restart. When a server was unreachable or its run_id
changed, the layer is flushed and the app's resync callbacks run
(wsworker.hooks.on_resync: chat's Rooms subscribe again on fresh connections,
which find the new master, then read from Postgres what was published meanwhile).
Sockets stay open.

With shards the flush and the resync are whole-layer (every room resubscribes and
catches up, a few milliseconds for rooms on the healthy shards): channels_redis
offers no public per-shard flush.

Only a Redis channel layer is watched; under any other layer this does nothing.
"""
import asyncio
import logging

from channels.layers import get_channel_layer

from . import hooks, metrics, redisconf, ticks


logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# While a server does not answer, ask more often: the resync (and live cross-worker
# delivery) follows the new master within this, not a whole POLL_SECONDS.
DOWN_POLL_SECONDS = 0.25
# A live Redis answers INFO in milliseconds; a dead one that sends no RST (a
# vanished host) must not hold the watcher for long.
TIMEOUT = 1.0
_tasks: list[asyncio.Task] = []
# Bumped on every resync. A Room that finishes subscribing under an older
# generation subscribes again: its channel may be on the connection the flush dropped.
generation = 0
# Redis servers of the layer a watcher cannot reach now (wsworker_channel_layer_up is 0 while any is).
_down: set = set()


def ensure_started() -> None:
    """Start one watcher per Redis server on the running loop, once per process (the server calls it)."""
    global _tasks
    hosts = redisconf.hosts()
    if not hosts:
        return
    loop = asyncio.get_running_loop()
    if _tasks and all(not t.done() and t.get_loop() is loop for t in _tasks):
        return
    for task in _tasks:
        if task.get_loop() is loop:
            task.cancel()
    _tasks = [loop.create_task(_watch(host), name=f"wsworker-layerwatch-{i}") for i, host in enumerate(hosts)]


async def _server_id(client, host: dict) -> str:
    """The run_id of the server `client` reaches; a Sentinel entry must reach a master."""
    info = await client.info("server")
    if redisconf.is_sentinel(host):
        role = (await client.info("replication")).get("role")
        if role != "master":
            # A demoted master that kept our connection: drop it, so the next
            # poll asks the Sentinels where the master is now.
            await client.connection_pool.disconnect()
            raise ConnectionError(f"{info.get('tcp_port')} is a {role} now")
    return info.get("run_id")


async def _watch(host: dict) -> None:
    name = redisconf.label(host)
    async with redisconf.connect(host, TIMEOUT) as client:
        known_run_id, unreachable = None, False
        while True:
            try:
                run_id = await _server_id(client, host)
            except Exception as exc:
                if asyncio.current_task().cancelling():
                    # redis-py may turn our cancellation into a connection error: honour it,
                    # or the loop (and a worker's shutdown) would wait on us forever.
                    raise asyncio.CancelledError from exc
                _down.add(name)
                metrics.layer.up = False
                if not unreachable:
                    logger.warning("channel layer: Redis %s unreachable (%s); sockets resync when it returns",
                                   name, exc)
                unreachable = True
            else:
                if unreachable or (known_run_id is not None and run_id != known_run_id):
                    why = "came back" if known_run_id in (None, run_id) else "restarted"
                    await _resync(name, why)
                known_run_id, unreachable = run_id, False
                _down.discard(name)
                metrics.layer.up = not _down
            await ticks.sleep(DOWN_POLL_SECONDS if unreachable else POLL_SECONDS)  # wsworker.ticks


async def _resync(name: str, why: str) -> None:
    """why: "came back" or "restarted" (a failover counts as restarted: a new run_id)."""
    global generation
    generation += 1
    metrics.redis_resyncs[why] += 1
    logger.warning("channel layer: Redis %s %s; resubscribing (generation %d)", name, why, generation)
    try:
        await get_channel_layer().flush()
    except Exception:
        logger.warning("channel layer: flush failed during resync", exc_info=True)
    await hooks.run_resync()
