"""Sharding: 2 Redis shards, rooms on both; one shard restarts while clients chat.

The stack runs LOCAL_REDIS_TOPOLOGY=sharded (REDIS_MODE=sharded, two shards):
channels_redis puts each room's group channel on one shard by a consistent hash.
Rooms on the other shard must never pause (a cross-worker probe there stays live
throughout); rooms on the restarted shard recover with 0 lost once it is back;
ws /readyz stays 200 "degraded" (not 503) while one shard is down. No socket closes.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from channels_redis.utils import _consistent_hash

from tests.faults import topology
from tests.faults.crossworker import CrossWorker
from tests.faults.probes import await_until
from tests.faults.scenario import ROOMS, assert_no_loss, run_fault
from tests.stack import NativeStack

pytestmark = pytest.mark.slow

# A room on the healthy shard "never pauses": no probe there takes longer than this.
HEALTHY_MAX_LATENCY = 1.0
OUTAGE_SECONDS = 3.0


@pytest.fixture(scope="module")
def sharded_stack():
    env = {"LOCAL_REDIS_TOPOLOGY": "sharded", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
    with NativeStack(workers=3, env=env) as stack:
        yield stack


def rooms_on_both_shards(stack, tag: str, per_shard: int) -> list[list[str]]:
    """[rooms on shard 1, rooms on shard 2], per_shard each, named tag-<n>."""
    found: list[list[str]] = [[], []]
    n = 0
    while min(len(f) for f in found) < per_shard:
        room = f"{tag}-{n}"
        n += 1
        shard = found[topology.predicted_shard(stack, room)]
        if len(shard) < per_shard:
            shard.append(room)
    return found


def test_predicted_shard_is_channels_redis_hash():
    """Pins the copy of channels_redis's private hash in topology.predicted_shard."""
    stack = type("S", (), {"settings": {"CHANNEL_LAYER_PREFIX": "chat"}})()
    for room in ("lobby", "a", "room-42", "x" * 64):
        assert topology.predicted_shard(stack, room) == _consistent_hash(topology.group_channel(stack, room), 2)


async def test_restart_one_shard(sharded_stack, fault_table):
    stack = sharded_stack
    tag = f"shard-{uuid.uuid4().hex[:6]}"
    load_rooms = rooms_on_both_shards(stack, tag, ROOMS // 2)
    healthy_probe, victim_probe = (rooms_on_both_shards(stack, f"{tag}-xw", 1)[i][0] for i in (0, 1))
    probe = CrossWorker(stack.ws_worker_urls[0], stack.ws_worker_urls[1], [healthy_probe, victim_probe])
    readyz = topology.ReadyzWatch(stack)
    seen: dict = {}

    async def inject(stack, load):
        # The rooms are where the hash says: each group channel on its predicted shard only.
        for node in (1, 2):
            channels = await asyncio.to_thread(topology.shard_channels, stack, node)
            for i, rooms in enumerate(load_rooms):
                for room in rooms:
                    assert (topology.group_channel(stack, room) in channels) == (i == node - 1), (room, node)
        t0 = seen["t0"] = time.monotonic()
        await asyncio.to_thread(stack.stop, "redis-2")
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(stack.start, "redis-2")
        await await_until(readyz.all_ok_now, 30, what="every ws /readyz 200 ok with both shards")
        await await_until(lambda: probe.live_for(victim_probe, t0, 1.0), 30,
                          what="live cross-worker delivery in the restarted shard's room")
        seen["until"] = time.monotonic()

    await probe.start()
    readyz.start()
    try:
        verdict, load = await run_fault(stack, "shard restart", inject, rooms=load_rooms[0] + load_rooms[1])
        await await_until(lambda: probe.missing() == 0, 30, what="every acked probe delivered")
    finally:
        await readyz.stop()
        await probe.close()
    healthy = probe.max_latency(healthy_probe, seen["t0"], seen["until"])
    if os.environ.get("FAULTS_DEBUG"):
        for room in (healthy_probe, victim_probe):
            print(room, [(round(t - seen["t0"], 2), round(lat, 2)) for t, lat in probe.latencies(room, seen["t0"] - 1)])
    verdict.resume = probe.resumed_at(victim_probe, seen["t0"]) - seen["t0"]
    verdict.fault = f"restart 1 of 2 shards (other shard's worst latency {healthy:.2f}s)"
    fault_table.append(verdict)
    assert healthy <= HEALTHY_MAX_LATENCY, f"a room on the healthy shard paused {healthy:.2f}s"
    assert readyz.any(lambda status, body: status == 200 and body == "degraded"), "no 'degraded' /readyz"
    assert not readyz.any(lambda status, body: status == 503), "a worker left rotation for one lost shard"
    assert verdict.reconnects == 0, f"sockets were closed by the shard restart: {verdict}"
    assert_no_loss(verdict)
