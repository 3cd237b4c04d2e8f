"""Sentinel failover: kill -9 the Redis master while clients chat across 3 workers.

The stack runs LOCAL_REDIS_TOPOLOGY=sentinel (master, replica, 3 Sentinels with
down-after-milliseconds LOCAL_SENTINEL_DOWN_AFTER_MS). When the master dies:
Sentinel promotes the replica; every worker's watcher sees a new run_id behind the
master name, flushes the layer and resyncs its rooms from Postgres; sockets stay
open. Then the old master comes back and must rejoin as a replica, with traffic
still flowing. Figures: Sentinel's own failover time, and the time until a message
sent on one worker reaches a socket on another live again (crossworker.py).
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest

from tests.faults import topology
from tests.faults.crossworker import CrossWorker
from tests.faults.probes import await_until
from tests.faults.scenario import assert_no_loss, run_fault
from tests.stack import NativeStack

pytestmark = pytest.mark.slow

# Resume target: Sentinel's failover time (down-after + election, measured) plus this.
RESUME_AFTER_FAILOVER = 2.0


@pytest.fixture(scope="module")
def sentinel_stack():
    env = {"LOCAL_REDIS_TOPOLOGY": "sentinel", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
    with NativeStack(workers=3, env=env) as stack:
        yield stack


async def test_sentinel_master_kill9(sentinel_stack, fault_table):
    stack = sentinel_stack
    probe_room = f"xw-sentinel-{uuid.uuid4().hex[:6]}"
    probe = CrossWorker(stack.ws_worker_urls[0], stack.ws_worker_urls[1], [probe_room])
    readyz = topology.ReadyzWatch(stack)
    seen: dict = {}

    async def inject(stack, load):
        old = topology.master_port(stack)
        assert old is not None, "no Sentinel names a master"
        seen.update(old=old, name=topology.node_name(stack, old))
        pid = stack.pid("redis" if seen["name"] == "redis-1" else "redis-2")
        os.kill(pid, signal.SIGKILL)
        t0 = seen["t0"] = time.monotonic()
        new = await await_until(lambda: (p := topology.master_port(stack)) not in (None, old) and p, 30,
                                interval=0.05, what="Sentinel promoted the replica")
        seen.update(new=new, failover=time.monotonic() - t0)
        await await_until(readyz.all_ok_now, 30, what="every ws /readyz 200 ok on the new master")
        await await_until(lambda: probe.live_for(probe_room, t0, 1.0), 30,
                          what="live cross-worker delivery on the new master")

    async def restore(stack, load):
        # The old master comes back: Sentinel turns it into a replica of the new master.
        await asyncio.to_thread(stack.start, seen["name"])
        await await_until(lambda: topology.role(stack, seen["old"]) == ("slave", "connected"), 60,
                          interval=0.5, what="old master rejoined as a connected replica")
        seen["rejoined"] = topology.role(stack, seen["old"])

    await probe.start()
    readyz.start()
    try:
        verdict, load = await run_fault(stack, "Sentinel master kill -9", inject, restore)
        await await_until(lambda: probe.missing() == 0, 30, what="every acked probe delivered")
    finally:
        await readyz.stop()
        await probe.close()
    verdict.resume = seen["resume"] = probe.resumed_at(probe_room, seen["t0"]) - seen["t0"]
    verdict.fault = f"Sentinel master kill -9 (failover {seen['failover']:.2f}s)"
    fault_table.append(verdict)
    print(f"\nSentinel failover: {seen['failover']:.2f}s (kill -> promoted), "
          f"cross-worker delivery live after {seen['resume']:.2f}s")
    assert seen["rejoined"] == ("slave", "connected")
    assert topology.master_port(stack) == seen["new"], "the returning old master took the master role back"
    # /readyz said so during the switch, and recovered by itself.
    assert readyz.any(lambda status, body: status == 503), "no ws /readyz 503 during the failover"
    assert readyz.all_ok_now()
    assert verdict.reconnects == 0, f"sockets were closed by the failover: {verdict}"
    assert seen["resume"] <= seen["failover"] + RESUME_AFTER_FAILOVER, seen
    assert_no_loss(verdict)
