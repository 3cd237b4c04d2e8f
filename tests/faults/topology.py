"""What an operator asks a Redis topology during a fault: who is master, what role a
node has, where a room's group channel lives, and what every worker's /readyz said.

Used by the Sentinel and sharding faults (test_sentinel.py, test_sharded.py) on
native stacks started with LOCAL_REDIS_TOPOLOGY (scripts/local-redis: node 1 on
LOCAL_REDIS_PORT, node 2 on +1, Sentinels on +2..+4).
"""
from __future__ import annotations

import asyncio
import binascii
import time

import redis

from tests.faults.probes import http_json, http_status


def node_port(stack, node: int) -> int:
    return stack.ports["LOCAL_REDIS_PORT"] + node - 1


def node_name(stack, port: int) -> str:
    """scripts/local's process name of the node on `port` (redis-1 or redis-2)."""
    return f"redis-{port - stack.ports['LOCAL_REDIS_PORT'] + 1}"


def _node(stack, port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=stack.settings["REDIS_PASSWORD"],
                       socket_timeout=1, socket_connect_timeout=1)


def master_port(stack) -> int | None:
    """The master's port as the first Sentinel that answers names it."""
    for i in range(3):
        client = redis.Redis(host="127.0.0.1", port=node_port(stack, 3 + i),
                             password=stack.settings["REDIS_SENTINEL_PASSWORD"],
                             socket_timeout=1, socket_connect_timeout=1)
        try:
            addr = client.sentinel_get_master_addr_by_name(stack.settings["REDIS_SENTINEL_MASTER"])
            return int(addr[1]) if addr else None
        except redis.RedisError:
            continue
        finally:
            client.close()
    return None


def role(stack, port: int) -> tuple[str, str | None]:
    """(role, replication link state): ('master', None), ('slave', 'connected'), ('down', None)."""
    client = _node(stack, port)
    try:
        reply = client.execute_command("ROLE")
    except redis.RedisError:
        return "down", None
    finally:
        client.close()
    kind = reply[0].decode()
    return kind, (reply[3].decode() if kind == "slave" else None)


def group_channel(stack, room: str) -> str:
    """The pub/sub channel of a room's group: channels_redis names it
    `<prefix>__group__<group>` and chat names the group `room.<room>`."""
    return f"{stack.settings['CHANNEL_LAYER_PREFIX']}__group__room.{room}"


def predicted_shard(stack, room: str, shards: int = 2) -> int:
    """channels_redis's consistent hash (channels_redis.utils._consistent_hash, CRC32
    over 4096 slots) of the group channel. Private to the library, so the sharding
    fault checks this prediction against PUBSUB CHANNELS on the live shards."""
    value = binascii.crc32(group_channel(stack, room).encode()) & 0xFFF
    return int(value / (4096 / shards))


def shard_channels(stack, node: int) -> set[str]:
    client = _node(stack, node_port(stack, node))
    try:
        prefix = stack.settings["CHANNEL_LAYER_PREFIX"]
        return {c.decode() for c in client.pubsub_channels(f"{prefix}__group__*")}
    finally:
        client.close()


class ReadyzWatch:
    """Polls every ws worker's /readyz in the background and keeps (time, [(status, body)])."""

    def __init__(self, stack, interval: float = 0.1):
        self.urls = [u.replace("ws://", "http://") + "/readyz" for u in stack.ws_worker_urls]
        self.interval = interval
        self.seen: list[tuple[float, list[tuple[int | None, str]]]] = []
        self._task: asyncio.Task | None = None

    def _poll(self) -> list[tuple[int | None, str]]:
        out = []
        for url in self.urls:
            status = http_status(url, 3)
            body = ""
            if status == 200:
                try:
                    body = http_json(url, 3).get("status", "")
                except OSError:
                    body = "?"
            out.append((status, body))
        return out

    async def _run(self) -> None:
        while True:
            self.seen.append((time.monotonic(), await asyncio.to_thread(self._poll)))
            await asyncio.sleep(self.interval)

    def start(self) -> "ReadyzWatch":
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def any(self, predicate) -> bool:
        return any(predicate(status, body) for _, polls in self.seen for status, body in polls)

    def all_ok_now(self) -> bool:
        return bool(self.seen) and all(s == 200 and b == "ok" for s, b in self.seen[-1][1])
