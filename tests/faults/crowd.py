"""Many sockets at once (idle holds, mass disconnects, fan-out, soak).

Opening is throttled (a bounded number of handshakes in flight) because a
thousand simultaneous handshakes measure the accept queue, not the property
under test; closing is NOT throttled: a mass disconnect is the property.
"""

from __future__ import annotations

import asyncio
from itertools import cycle

import redis

from clients.chatclient import Backoff, ChatClient, State, room_url
from tests.faults.probes import http_json, http_status


def source_addresses(count: int, per_ip: int) -> list[tuple[str, int] | None]:
    """Spread sockets over 127.0.0.2.. so each source IP stays under nginx's limit_conn."""
    return [("127.0.0.%d" % (2 + i // per_ip), 0) for i in range(count)]


async def open_crowd(bases: list[str], rooms: list[str], count: int, *, after: int | None = 0,
                     concurrency: int = 50, timeout: float = 120.0, per_ip: int | None = None,
                     ping_interval: float | None = None,
                     backoff: Backoff = Backoff(base=0.5, cap=5.0, max_attempts=20)) -> list[ChatClient]:
    """``count`` clients spread round-robin over ``bases`` (URLs) and ``rooms``; all open."""
    addrs = source_addresses(count, per_ip) if per_ip else [None] * count
    pairs = zip(range(count), cycle(bases), cycle(rooms))
    clients = [
        ChatClient(room_url(base, room), after=after, ping_interval=ping_interval, local_addr=addrs[i],
                   keep_messages=False, backoff=backoff)
        for i, base, room in pairs
    ]
    gate = asyncio.Semaphore(concurrency)

    async def open_one(client: ChatClient) -> None:
        async with gate:
            await client.start(wait_open=timeout)

    await asyncio.wait_for(asyncio.gather(*(open_one(c) for c in clients)), timeout)
    return clients


async def close_crowd(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)


def dropped(clients: list[ChatClient]) -> list[ChatClient]:
    """Clients that lost their socket at least once, or are not open now."""
    return [c for c in clients if c.outages or c.state is not State.OPEN]


def worker_sockets(stack) -> list[int]:
    """Open sockets per ws worker, as each worker's /healthz reports them."""
    return [int(http_json(u.replace("ws://", "http://") + "/healthz")["sockets"]) for u in stack.ws_worker_urls]


def redis_for(stack) -> redis.Redis:
    s = stack.settings
    return redis.Redis(host="127.0.0.1", port=int(s["REDIS_PORT"]), password=s.get("REDIS_PASSWORD") or None,
                       db=int(s.get("REDIS_DB", 0)), socket_timeout=5)


def all_ready(stack) -> bool:
    return all(http_status(u.replace("ws://", "http://") + "/readyz") == 200 for u in stack.ws_worker_urls)
