"""One fault experiment: traffic, fault, recovery, then judge against Postgres.

Every fault test is ``await run_fault(stack, name, inject)``; ``inject`` breaks
something and returns once the operator-visible recovery happened, so the
experiment itself (and its accounting) is identical for every fault.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Awaitable, Callable

from clients.chatclient import room_url

from tests.faults import persisted
from tests.faults.load import RoomLoad, Verdict

# K clients across several rooms, each sending continuously below the rate limit.
ROOMS = 4
PER_ROOM = 3
RATE = 2.0
WARMUP_ACKS = 24  # acked sends before the fault: the rooms are busy when it hits
AFTER_ACKS = 24  # acked sends after recovery: live traffic flows again
CATCH_UP_TIMEOUT = 60.0

Inject = Callable[["object", RoomLoad], Awaitable[None]]


async def run_fault(stack, fault: str, inject: Inject, restore: Inject | None = None,
                    rooms: list[str] | None = None) -> tuple[Verdict, RoomLoad]:
    """``inject`` breaks something and returns once clients can be served again;
    ``restore`` (optional) then puts the stack back for the next test, outside the
    catch-up measurement (e.g. restarting a killed worker). ``rooms``: the ROOMS
    room names, when the fault needs particular ones (e.g. on both shards)."""
    tag = f"{fault.replace(' ', '')}-{uuid.uuid4().hex[:6]}"
    rooms = rooms or [f"{tag}-r{i}" for i in range(ROOMS)]
    load = RoomLoad(lambda room: room_url(stack.ws_base, room), rooms, PER_ROOM, RATE, tag)
    try:
        await load.start()
        await load.wait_acks(WARMUP_ACKS, timeout=30)
        fault_at = time.monotonic()
        await inject(stack, load)
        # Time to catch up: from the fault until every client holds every message
        # persisted by the time service recovered (those sent during the outage too).
        heads = await asyncio.to_thread(persisted.heads, stack.settings, rooms)
        await load.wait_caught_up(heads, CATCH_UP_TIMEOUT)
        catch_up = time.monotonic() - fault_at
        if restore is not None:
            await restore(stack, load)
        await load.wait_acks(AFTER_ACKS, timeout=60)
        await load.stop_sending()
        final = await asyncio.to_thread(persisted.heads, stack.settings, rooms)
        await load.wait_caught_up(final, CATCH_UP_TIMEOUT)
        rows = await asyncio.to_thread(persisted.messages, stack.settings, rooms)
        verdict = load.judge(fault, rows, since=fault_at)
        verdict.catch_up = catch_up
        return verdict, load
    finally:
        await load.close()


def assert_no_loss(verdict: Verdict) -> None:
    assert verdict.sent > 0, "no message was acked: the experiment proved nothing"
    assert verdict.lost == 0, f"{verdict.fault}: {verdict.lost} lost; {verdict.problems}"
    assert verdict.duplicated == 0, f"{verdict.fault}: {verdict.duplicated} duplicated; {verdict.problems}"
    assert verdict.reordered == 0, f"{verdict.fault}: {verdict.reordered} ids arrived out of order"
    assert not verdict.problems, verdict.problems


def worker_index_of(stack, client_worker: str | None, workers: int) -> int | None:
    """Map a welcome's ``host:pid`` to the stack's worker index (1-based)."""
    if not client_worker:
        return None
    pid = client_worker.rsplit(":", 1)[-1]
    for i in range(1, workers + 1):
        if str(stack.pid("ws", i)) == pid:
            return i
    return None
