"""The stock stack's measured failures (issue 7), each pinned by a test on ours.

* idle sockets die (channels_redis#422: redis-py 8's 5 s read timeout)
* a mass disconnect fails ("Too many connections") and leaves stale group members
* group messages are dropped silently at 10 rooms x 10 subscribers x 13.5 msg/s
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import pytest_asyncio

from clients.chatclient import ChatClient, State, room_url
from tests.faults import persisted
from tests.faults.crowd import close_crowd, dropped, open_crowd, redis_for, worker_sockets
from tests.faults.probes import LogMark, await_until, env_int, rebalance_closes_logged, redis_layer_footprint

# One event loop for the module: the idle crowd is shared by two tests.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

IDLE_SOCKETS = env_int("FAULTS_IDLE_SOCKETS", 1000)
IDLE_SECONDS = env_int("FAULTS_IDLE_SECONDS", 60)
IDLE_ROOMS = 10
FANOUT_ROOMS, FANOUT_SUBSCRIBERS, FANOUT_SENDERS = 10, 10, 3
FANOUT_RATE = 13.5  # msg/s per room, the rate at which the stock layer went "over capacity"
FANOUT_SECONDS = env_int("FAULTS_FANOUT_SECONDS", 10)
# Log lines that mean a socket or a group operation failed.
BAD_LOG = ("Too many connections", "Traceback", " ERROR ", "group_discard failed", "over capacity")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def idle_crowd(stack):
    """IDLE_SOCKETS sockets straight to the workers (the bug lives there), over 10 rooms."""
    r = redis_for(stack)
    prefix = stack.settings.get("CHANNEL_LAYER_PREFIX", "chat")
    baseline = redis_layer_footprint(r, prefix)
    tag = uuid.uuid4().hex[:6]
    rooms = [f"idle-{tag}-{i}" for i in range(IDLE_ROOMS)]
    mark = LogMark([stack.log_path("ws", i) for i in range(1, len(stack.ws_worker_urls) + 1)])
    clients = await open_crowd(stack.ws_worker_urls, rooms, IDLE_SOCKETS)
    # A census taken mid-storm may move a few sockets with 1012 (see unexplained_drops);
    # they resume within the client's backoff. The tests start from the settled crowd.
    await await_until(lambda: all(c.state is State.OPEN for c in clients), 30,
                      what="every idle socket open after the opening storm (the moved ones resumed)")
    state = {"clients": clients, "rooms": rooms, "baseline": baseline, "redis": r, "prefix": prefix,
             "mark": mark}
    yield state
    await close_crowd(clients)


def unexplained_drops(clients, mark: LogMark) -> list[ChatClient]:
    """Dropped clients, except those the census moved (1012; they resume, and must be open by the end).

    The crowd opens straight to the worker ports, 50 at a time: a census taken
    mid-storm can see one worker ahead of the other and move the excess with
    1012, the balancer working as designed (issue 16); the moved clients resume.
    Those closes are told apart by the workers' own "rebalance: done" lines and
    may not outnumber them."""
    moved = [c for c in dropped(clients) if 1012 in c.close_codes]
    assert len(moved) <= rebalance_closes_logged(mark.new_text().values()), (
        f"{len(moved)} sockets closed with 1012, more than the workers logged as rebalanced")
    return [c for c in dropped(clients) if c not in moved]


async def test_idle_sockets_held_without_drop(stack, idle_crowd):
    clients, mark = idle_crowd["clients"], idle_crowd["mark"]
    assert sum(worker_sockets(stack)) >= IDLE_SOCKETS
    held_until = time.monotonic() + IDLE_SECONDS
    # The hold IS the test (#422 drops idle sockets within seconds); fail at the first drop.
    while time.monotonic() < held_until:
        lost = unexplained_drops(clients, mark)
        assert not lost, f"{len(lost)} of {len(clients)} idle sockets dropped, e.g. codes {lost[0].close_codes}"
        await asyncio.sleep(1)
    await await_until(lambda: all(c.state is State.OPEN for c in clients), 30,
                      what="every idle socket open (the moved ones resumed)")
    # Open is not enough: each socket must still be subscribed to its room.
    for room in idle_crowd["rooms"]:
        sender = next(c for c in clients if c.url.endswith(f"/{room}/"))
        await sender.send(f"after-idle-{room}", timeout=15)
    await await_until(lambda: all((c.last_id or 0) >= 1 for c in clients), 30,
                      what="every idle socket received its room's message")
    assert not unexplained_drops(clients, mark)


async def test_mass_disconnect_leaves_no_errors_or_members(stack, idle_crowd):
    clients, r = idle_crowd["clients"], idle_crowd["redis"]
    assert sum(worker_sockets(stack)) >= len(clients)
    mark = LogMark([stack.log_path("ws", i) for i in range(1, len(stack.ws_worker_urls) + 1)])
    await close_crowd(clients)  # all at once: the property under test
    await await_until(lambda: sum(worker_sockets(stack)) == 0, 60, what="every worker reports 0 sockets")
    await await_until(lambda: redis_layer_footprint(r, idle_crowd["prefix"]) == idle_crowd["baseline"], 60,
                      what=f"Redis pub/sub back to baseline {idle_crowd['baseline']}")
    bad = mark.matching(BAD_LOG)
    assert not bad, f"{len(bad)} error lines in worker logs, e.g. {bad[:3]}"


async def test_fanout_10x10_no_silent_loss(stack):
    tag = uuid.uuid4().hex[:6]
    rooms = [f"fan-{tag}-{i}" for i in range(FANOUT_ROOMS)]
    mark = LogMark([stack.log_path("ws", i) for i in range(1, len(stack.ws_worker_urls) + 1)])
    subs = {room: [ChatClient(room_url(stack.ws_base, room), after=0) for _ in range(FANOUT_SUBSCRIBERS)]
            for room in rooms}
    everyone = [c for cs in subs.values() for c in cs]
    sent: dict[str, list[str]] = {room: [] for room in rooms}
    try:
        await asyncio.gather(*(c.start(wait_open=30) for c in everyone))
        per_sender = FANOUT_RATE / FANOUT_SENDERS
        started = time.monotonic()

        async def sender(room: str, k: int, client: ChatClient) -> None:
            for n in range(int(FANOUT_SECONDS * per_sender)):
                # Fixed schedule, no ack wait: the offered load must not bend to latency.
                await asyncio.sleep(max(0.0, started + n / per_sender + k / FANOUT_RATE - time.monotonic()))
                text = f"fan-{room}-{k}-{n}"
                sent[room].append(text)
                await client.send(text, wait=False, timeout=10)

        await asyncio.gather(*(sender(room, k, subs[room][k]) for room in rooms for k in range(FANOUT_SENDERS)))
        elapsed = time.monotonic() - started
        offered = sum(len(v) for v in sent.values()) / elapsed / FANOUT_ROOMS
        assert offered >= 0.9 * FANOUT_RATE, f"only {offered:.1f} msg/s per room offered"
        # Every text must be stored exactly once, and every subscriber must get all of it.
        total = sum(len(v) for v in sent.values())
        await await_until(lambda: sum(persisted.heads(stack.settings, rooms).values()) >= total, 30, interval=0.5,
                          what=f"{total} messages persisted")
        rows = persisted.messages(stack.settings, rooms)
        for room in rooms:
            assert sorted(t for _, t in rows[room]) == sorted(sent[room]), f"{room}: stored texts differ from sent"
        heads = {room: len(rows[room]) for room in rooms}
        await await_until(lambda: all((c.last_id or 0) >= heads[room] for room, cs in subs.items() for c in cs),
                          30, what="every subscriber received every message")
        for room, cs in subs.items():
            for c in cs:
                assert sorted(c.messages) == list(range(1, heads[room] + 1))
                assert c.duplicates == 0 and not c.outages and not c.errors, (c.close_codes, c.errors[:3])
        bad = mark.matching(BAD_LOG)
        assert not bad, f"{len(bad)} error lines in worker logs, e.g. {bad[:3]}"
    finally:
        await close_crowd(everyone)
