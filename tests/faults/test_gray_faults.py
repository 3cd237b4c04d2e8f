"""Gray faults: Redis frozen, a worker frozen, Postgres down or frozen while rooms are new.

Each hits the busy 3-worker native stack of the suite (tests/faults/conftest.py)
through the same experiment as the crash faults (tests/faults/scenario.py), and
then asserts what docs/reliability.md promises for it, as a user sees it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter

import psutil
import pytest

from clients.chatclient import HEARTBEAT_SECONDS, room_url

from tests.faults.gray import ack_p99, probe_connect, probe_series, stopped_for
from tests.faults.probes import await_until, http_status
from tests.faults.scenario import assert_no_loss, run_fault, worker_index_of
from tests.faults.test_faults import busiest_worker

pytestmark = pytest.mark.slow

REDIS_FREEZE = 15.0
WORKER_FREEZE = 25.0
PG_DOWN = 15.0
PG_FREEZE = 12.0


async def test_frozen_redis(stack, fault_table):
    seen = {}

    async def inject(stack, load):
        seen["from"] = time.monotonic()
        await stopped_for(stack.pid("redis"), REDIS_FREEZE)
        seen["until"] = time.monotonic()

    verdict, load = await run_fault(stack, "Redis frozen 15s", inject)
    seen["p99"], seen["n"] = ack_p99(load, seen["from"], seen["until"])
    verdict.extra = f"ack p99 during freeze {seen['p99']:.2f}s (n={seen['n']})"
    fault_table.append(verdict)
    assert seen["n"] >= 20, f"only {seen['n']} sends during the freeze"
    assert seen["p99"] <= 1.0, f"ack p99 {seen['p99']:.2f}s during the Redis freeze > 1 s"
    assert verdict.reconnects == 0, "a frozen Redis closed sockets"
    assert_no_loss(verdict)


async def test_frozen_worker(stack, fault_table):
    workers = len(stack.ws_worker_urls)
    seen = {}

    async def inject(stack, load):
        victim = busiest_worker(stack, load, workers)
        on_victim = [c for c in load.all_clients() if worker_index_of(stack, c.worker, workers) == victim]
        opens = {id(c): c.opens for c in on_victim}
        freeze = asyncio.create_task(stopped_for(stack.pid("ws", victim), WORKER_FREEZE))
        frozen_at = time.monotonic()
        room = f"newconn-{uuid.uuid4().hex[:6]}"
        # New connects through nginx while it is frozen: one attempt each, 4 a second for 8 s.
        probes = await probe_series(lambda i: room_url(stack.ws_base, room), 0.25, 32, timeout=WORKER_FREEZE)
        # Its heartbeat clients give up on it and reopen elsewhere.
        await await_until(lambda: all(c.opens > opens[id(c)] for c in on_victim), WORKER_FREEZE,
                          what="clients of the frozen worker reopened elsewhere")
        moved = [c.outages[-1].reopened_at - frozen_at for c in on_victim if c.outages]
        seen.update(victim=victim, hit=len(on_victim), probes=probes, frozen_at=frozen_at, moved=moved,
                    where={worker_index_of(stack, c.worker, workers) for c in on_victim})
        await freeze  # thawed: it now reads the frames its dropped sockets had sent

    verdict, load = await run_fault(stack, "worker frozen 25s", inject)
    probes, frozen_at = seen["probes"], seen["frozen_at"]
    slow = [p for p in probes if not (p.outcome == "welcome" and p.seconds <= 3.0)]
    last_slow = max((p.started - frozen_at for p in slow), default=0.0)
    good_after = [p for p in probes if p.started - frozen_at > last_slow]
    verdict.extra = (f"new connects: {len(probes) - len(slow)}/{len(probes)} welcomed within 3 s, all after "
                     f"{last_slow:.1f}s; heartbeat clients moved after max {max(seen['moved']):.1f}s")
    fault_table.append(verdict)
    assert seen["hit"] > 0
    assert seen["victim"] not in seen["where"], "a client reopened on the frozen worker"
    assert last_slow <= 3.0, f"nginx still sent new handshakes to the frozen worker {last_slow:.1f}s in: {slow}"
    assert good_after and all(p.outcome == "welcome" for p in good_after)
    assert max(seen["moved"]) <= 2 * HEARTBEAT_SECONDS + 3.0, seen["moved"]
    # After the thaw it processed the frames of the sockets it lost: stored once (client_msg_id).
    assert_no_loss(verdict)


def _cached(stack, load) -> set:
    """Where each load room is cached: (room, the worker its client sits on, its last id)."""
    workers = len(stack.ws_worker_urls)
    return {(room, worker_index_of(stack, c.worker, workers), c.last_id)
            for room, cs in load.clients.items() for c in cs}


async def _probe_rooms(stack, cached, new_rooms: int, connect_timeout: float, tag: str) -> dict:
    """While Postgres is unavailable: one-shot connects into `new_rooms` rooms new to every
    worker (through nginx, 1 a second) and, meanwhile, into every cached room straight on
    its worker, fresh and with ?after=."""
    new_room = lambda i: room_url(stack.ws_base, f"{tag}-{uuid.uuid4().hex[:8]}")  # noqa: E731
    uncached = asyncio.create_task(probe_series(new_room, 1.0, new_rooms, timeout=connect_timeout + 5))
    hits = []
    for room, index, last_id in cached:
        direct = stack.ws_worker_urls[index - 1]
        hits.append(await probe_connect(f"{room_url(direct, room)}?after={max(0, last_id - 3)}", 5))
        hits.append(await probe_connect(room_url(direct, room), 5))
    return {"uncached": await uncached, "cached": hits}


def _summary(seen) -> str:
    uncached, cached = seen["uncached"], seen["cached"]
    outcomes = Counter((p.outcome, p.close_code, (p.error or {}).get("code")) for p in uncached)
    return (f"cached connects {sum(p.outcome == 'welcome' for p in cached)}/{len(cached)} welcomed; "
            f"uncached: {dict(outcomes)}, slowest {max(p.seconds for p in uncached):.1f}s")


def _assert_cached_served_and_new_refused_in_time(seen, connect_timeout: float) -> None:
    cached, uncached = seen["cached"], seen["uncached"]
    assert all(p.outcome == "welcome" for p in cached), [p for p in cached if p.outcome != "welcome"]
    for p in uncached:
        assert p.outcome == "refused" and p.close_code == 1013, p  # never an HTTP 502, never a hang
        assert (p.error or {}).get("code") == "unavailable" and (p.error or {}).get("retry_after"), p
        assert p.seconds <= connect_timeout + 1.0, p


async def test_postgres_down_with_new_rooms(stack, fault_table):
    connect_timeout = float(stack.settings["WS_CONNECT_TIMEOUT"])
    seen = {}

    async def inject(stack, load):
        cached = _cached(stack, load)
        await asyncio.to_thread(stack.stop, "db")
        down_at = time.monotonic()
        seen.update(await _probe_rooms(stack, cached, 8, connect_timeout, "uncached"))
        remaining = PG_DOWN - (time.monotonic() - down_at)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the outage's duration
        await asyncio.to_thread(stack.start, "db")
        await await_until(lambda: http_status(f"{stack.http_url}/readyz", 5) == 200, 60,
                          what="/readyz 200 after Postgres returned")

    verdict, load = await run_fault(stack, "Postgres down 15s", inject)
    verdict.extra = _summary(seen)
    fault_table.append(verdict)
    _assert_cached_served_and_new_refused_in_time(seen, connect_timeout)
    assert verdict.reconnects == 0, "an open socket was closed by the Postgres outage"
    assert_no_loss(verdict)


async def test_frozen_postgres_with_new_rooms(stack, fault_table):
    """Every Postgres process SIGSTOPped (a frozen VM): the kernel still accepts its
    connections and every statement hangs instead of failing. A connect into a room
    new to its worker waits on the worker's read connection; it must get its 1013 in
    time and the worker must keep serving; once Postgres thaws, new rooms are served
    again at the first attempt and nothing sent meanwhile is lost or doubled."""
    connect_timeout = float(stack.settings["WS_CONNECT_TIMEOUT"])
    seen = {}

    async def inject(stack, load):
        cached = _cached(stack, load)
        master = psutil.Process(stack.pid("db"))
        frozen = [master, *master.children(recursive=True)]
        for proc in frozen:
            os.kill(proc.pid, signal.SIGSTOP)
        try:
            frozen_at = time.monotonic()
            seen.update(await _probe_rooms(stack, cached, 6, connect_timeout, "frozenpg"))
            remaining = PG_FREEZE - (time.monotonic() - frozen_at)
            if remaining > 0:
                await asyncio.sleep(remaining)  # the freeze's duration
        finally:
            for proc in frozen:
                os.kill(proc.pid, signal.SIGCONT)
        seen["after"] = [await probe_connect(room_url(url, f"thawed-{uuid.uuid4().hex[:8]}"), connect_timeout + 5)
                         for url in stack.ws_worker_urls]

    verdict, load = await run_fault(stack, "Postgres frozen 12s", inject)
    after = seen["after"]
    verdict.extra = (f"{_summary(seen)}; after the thaw: {[p.outcome for p in after]}, "
                     f"slowest {max(p.seconds for p in after):.1f}s")
    fault_table.append(verdict)
    _assert_cached_served_and_new_refused_in_time(seen, connect_timeout)
    # Every worker serves a room new to it once Postgres answers: its read connection
    # came back from the statements that waited through the freeze.
    assert all(p.outcome == "welcome" and p.seconds <= connect_timeout for p in after), after
    assert verdict.reconnects == 0, "an open socket was closed by the Postgres freeze"
    assert_no_loss(verdict)
