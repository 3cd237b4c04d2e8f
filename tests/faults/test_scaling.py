"""Scaling the ws tier natively (issue 16): rebalancing after a scale-out, and
admission control at WS_MAX_SOCKETS, both through nginx on real processes.

Each test runs its own stack (the fault suite's shared one must keep 3 workers
and production defaults).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from clients.chatclient import room_url
from tests.faults import persisted
from tests.faults.crowd import close_crowd, open_crowd
from tests.faults.load import RoomLoad
from tests.faults.probes import await_until, env_int, http_status
from tests.faults.scaling import (balanced, closes_1012, judge_crowd, minimum_moves, open_per_worker,
                                  refused_503, worker_health)
from tests.faults.scenario import assert_no_loss
from tests.stack import NativeStack

pytestmark = [pytest.mark.slow]

SOCKETS = env_int("SCALING_SOCKETS", 600)
ROOMS = 20
CHAT_ROOMS = 4  # one client chatting in each, 1 msg/s, throughout
BALANCE_DEADLINE = 60.0
PER_IP = 150  # source addresses, under nginx's NGINX_MAX_CONN_PER_IP (200)


async def _health(stack) -> list[dict]:
    return await asyncio.to_thread(worker_health, stack)


async def test_scale_out_2_to_3_rebalances_without_loss(figures):
    stack = NativeStack(workers=2, spare_workers=1)
    await asyncio.to_thread(stack.up)
    tag = uuid.uuid4().hex[:6]
    rooms = [f"scale-{tag}-{i}" for i in range(ROOMS)]
    crowd, load = [], None
    try:
        crowd = await open_crowd([stack.ws_base], rooms, SOCKETS, per_ip=PER_IP, concurrency=50)
        load = RoomLoad(lambda r: room_url(stack.ws_base, r), rooms[:CHAT_ROOMS], 1, 1.0, tag)
        await load.start()
        await load.wait_acks(CHAT_ROOMS, timeout=30)
        before = open_per_worker(await _health(stack))
        assert sum(before) == SOCKETS + CHAT_ROOMS, before

        await asyncio.to_thread(stack.add_ws_worker)  # returns once ws-3 is ready and in nginx
        ready = time.monotonic()
        counts = await await_until(
            lambda: (c := open_per_worker(worker_health(stack))) and balanced(c) and c,
            BALANCE_DEADLINE, interval=0.5, what="every worker within mean +-20 %")
        took = time.monotonic() - ready

        await load.wait_acks(CHAT_ROOMS, timeout=30)  # chat flows after the moves
        await load.stop_sending()
        heads = await asyncio.to_thread(persisted.heads, stack.settings, rooms)
        await await_until(lambda: all((c.last_id or 0) >= heads[c.url.rstrip("/").rsplit("/", 1)[-1]]
                                      for c in crowd), 30, what="every idle client caught up")
        rows = await asyncio.to_thread(persisted.messages, stack.settings, rooms[:CHAT_ROOMS])
        await load.wait_caught_up({r: heads[r] for r in rooms[:CHAT_ROOMS]}, 30)
        health = await _health(stack)
        closes = closes_1012(health)
        minimum = minimum_moves(before, 3)
        idle = judge_crowd(crowd, heads)
        chat = load.judge("scale out 2->3", rows, since=ready)
        figures["native scale-out 2->3 (600 sockets, 20 rooms)"] = (
            f"before {before}, within +-20 % {counts} {took:.1f} s after ws-3 was ready, at the end "
            f"{open_per_worker(health)}; "
            f"1012 closes {closes} (minimum {minimum}); idle clients: lost {idle.lost}, duplicated "
            f"{idle.duplicated}, reconnects {idle.reconnects}, failed handshakes {idle.handshake_failures}; "
            f"chatters: {chat.sent} acked, lost {chat.lost}, duplicated {chat.duplicated}")
        assert took <= BALANCE_DEADLINE
        assert idle.lost == 0 and idle.duplicated == 0 and idle.reordered == 0, idle
        assert idle.stopped == 0, idle.problems[:3]
        assert_no_loss(chat)
        assert balanced(open_per_worker(health)), health  # and it stays so
        # Close to the fewest moves possible, not a multiple of it. A few short of it is
        # allowed: a worker fixes its target from a census snapshot, where a socket another
        # worker has just closed can still be in that worker's entry (written up to a
        # second earlier) and already in the receiver's, so the target can be a few
        # sockets high (seen: 194 and 195 closes for 200 on a loaded machine).
        assert 0.9 * minimum <= closes <= 1.3 * minimum + 5, (closes, minimum)
    finally:
        if load is not None:
            await load.close()
        await close_crowd(crowd)
        await asyncio.to_thread(stack.down)


CAP = 100


async def _handshake(url: str) -> tuple[int, dict]:
    """(HTTP status, headers) of one WebSocket handshake: 101 when it was accepted."""
    try:
        async with connect(url, open_timeout=5, proxy=None, close_timeout=1):
            return 101, {}
    except InvalidStatus as exc:
        return exc.response.status_code, dict(exc.response.headers)


async def test_admission_caps_each_worker_and_refuses_with_503_only_when_all_are_full(figures):
    workers = 3
    stack = NativeStack(workers=workers, env={"WS_MAX_SOCKETS": str(CAP)})
    await asyncio.to_thread(stack.up)
    rooms = [f"cap-{uuid.uuid4().hex[:6]}-{i}" for i in range(10)]
    crowd, more = [], []
    try:
        crowd = await open_crowd([stack.ws_base], rooms, CAP * workers, per_ip=PER_IP, concurrency=20)
        counts = open_per_worker(await _health(stack))
        assert sum(counts) == CAP * workers and max(counts) <= CAP, counts
        seen_by_clients = sum(1 for c in crowd for code in c.close_codes if code is None)

        # The 301st: every worker is full, nginx tried each, the client gets 503 + Retry-After.
        status, headers = await _handshake(room_url(stack.ws_base, rooms[0]))
        assert status == 503, status
        assert int(headers.get("retry-after", headers.get("Retry-After", "0"))) > 0, headers
        readyz = [http_status(u.replace("ws://", "http://") + "/readyz") for u in stack.ws_worker_urls]
        assert readyz == [503] * workers, readyz

        await close_crowd(crowd[:50])
        await await_until(lambda: sum(open_per_worker(worker_health(stack))) == CAP * workers - 50, 15,
                          what="50 sockets gone from the workers' counts")
        readyz = [http_status(u.replace("ws://", "http://") + "/readyz") for u in stack.ws_worker_urls]
        assert readyz == [200] * workers, readyz
        results = [await _handshake(room_url(stack.ws_base, rooms[i % 10])) for i in range(10)]
        assert [s for s, _ in results] == [101] * 10, results
        more = await open_crowd([stack.ws_base], rooms, 40, per_ip=PER_IP, concurrency=10)
        health = await _health(stack)
        counts = open_per_worker(health)
        figures["admission, 3 workers x WS_MAX_SOCKETS=100"] = (
            f"300 opened through nginx (client-visible failed handshakes {seen_by_clients}), 301st: 503 "
            f"Retry-After {headers.get('retry-after')}; after 50 closed: 10 handshakes 101 and 40 clients "
            f"open; per worker now {counts}; worker-side 503s {refused_503(health)}")
        assert max(counts) <= CAP, counts
        assert seen_by_clients == 0, "a client was refused while some worker had room"
    finally:
        await close_crowd(crowd + more)
        await asyncio.to_thread(stack.down)
