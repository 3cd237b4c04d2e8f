"""Faults against the real compose stack (`up --scale ws=3`), through nginx's published port.

The native suite (test_faults.py) proves the protocol survives faults; this one
proves the container wiring does too: Docker's DNS, nginx's re-resolving upstream,
restart of a stock Redis container and the workers' layer watcher. Each fault hits
a busy stack; afterwards every client's sequence per room must equal what Postgres
persisted (0 lost, 0 duplicated).

The engine and the throwaway project (unique name, free port, temp env file,
`down -v` and image removal at session end) are the compose suite's own fixtures;
CI=true turns a missing engine into a failure there. Faults run in file order and
each leaves the stack with three healthy replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.compose.conftest import engine, project  # noqa: F401  (fixtures: engine check, throwaway project)
from tests.faults.compose_stack import ComposeStack, await_in_thread, run_compose_fault, worker_host
from tests.faults.probes import await_until, http_status, rebalance_closes_logged
from tests.faults.scenario import assert_no_loss

pytestmark = pytest.mark.slow

WS_REPLICAS = 3


@pytest.fixture(scope="module")
def compose_stack(project):  # noqa: F811
    """The stack up and healthy; torn down (down -v) as soon as this file is done."""
    try:
        started = time.monotonic()
        project.compose("up", "-d", "--build", "--wait", "--scale", f"ws={WS_REPLICAS}", timeout=600)
        print(f"\ncompose faults: `up -d --build --wait --scale ws={WS_REPLICAS}` took "
              f"{time.monotonic() - started:.1f}s")
        stack = ComposeStack(project)
        assert len(stack.ws_replicas()) == WS_REPLICAS
        yield stack
    finally:
        project.compose("down", "-v", "--remove-orphans", "--timeout", "30", timeout=300, check=False)


async def test_docker_kill_one_ws_replica(compose_stack, fault_table):
    seen: dict = {}

    async def inject(stack: ComposeStack, load):
        replicas = await asyncio.to_thread(stack.ws_replicas)
        clients = load.all_clients()
        assert {worker_host(c.worker) for c in clients} <= set(replicas), "a client sits on a foreign worker"
        # The replica holding most of our sockets, so the kill hits many clients.
        counts = Counter(worker_host(c.worker) for c in clients)
        victim = max(replicas, key=lambda host: counts[host])
        on_victim = [c for c in clients if worker_host(c.worker) == victim]
        opens = {id(c): c.opens for c in on_victim}
        seen.update(host=victim, cid=replicas[victim], survivors=set(replicas) - {victim}, hit=len(on_victim))
        await asyncio.to_thread(stack.docker, "kill", replicas[victim])
        # Clients of the dead replica find the survivors through nginx and resume there.
        await await_until(lambda: all(c.opens > opens[id(c)] and worker_host(c.worker) in seen["survivors"]
                                      for c in on_victim), 45,
                          what=f"clients of killed replica {victim} reopened on a survivor")
        seen["state"] = await asyncio.to_thread(stack.state, replicas[victim])

    async def restore(stack: ComposeStack, load):
        # `docker kill` is a manual stop: the restart policy leaves it down, an operator starts it.
        await asyncio.to_thread(stack.docker, "start", seen["cid"])
        await await_in_thread(lambda: stack.healthy(seen["cid"]), 60, what="killed replica healthy again")

    verdict, load = await run_compose_fault(compose_stack, "compose docker kill ws replica", inject, restore)
    fault_table.append(verdict)
    assert seen["hit"] > 0 and verdict.reconnects >= seen["hit"], (seen, verdict)
    assert seen["state"]["Status"] == "exited" and seen["state"]["ExitCode"] == 137, seen["state"]
    assert len(compose_stack.ws_replicas()) == WS_REPLICAS
    assert_no_loss(verdict)


def rebalance_closes(stack: ComposeStack, since: float) -> int:
    """1012 closes the ws replicas logged as rebalancing since then (wsworker.rebalance).

    A compose load's dozen handshakes can land on one replica (nginx re-resolves
    the ws service every NGINX_RESOLVER_VALID and Docker's DNS order is random);
    the census then moves the excess to the others with 1012, whatever else
    happens. Those closes are the balancer's, not the fault's: they are told
    apart by the replicas' own "rebalance: done, closed N socket(s)" lines.
    """
    return rebalance_closes_logged(stack.logs_since(cid, since) for cid in stack.ws_replicas().values())


async def test_redis_restart(compose_stack, fault_table):
    seen: dict = {}

    async def inject(stack: ComposeStack, load):
        (redis_id,) = await asyncio.to_thread(stack.project.container_ids, "redis")
        before = (await asyncio.to_thread(stack.state, redis_id))["StartedAt"]
        clients = load.all_clients()
        seen["serving"] = {worker_host(c.worker) for c in clients}
        seen["since"] = time.time()
        seen["load_since"] = load.started_at
        await asyncio.to_thread(stack.project.compose, "restart", "redis", timeout=120)
        seen["restarted"] = (await asyncio.to_thread(stack.state, redis_id))["StartedAt"] != before
        # Each replica's watcher notices the new Redis and its rooms subscribe again.
        replicas = await asyncio.to_thread(stack.ws_replicas)
        seen["replicas"] = replicas
        await await_in_thread(
            lambda: all("resubscribing" in stack.logs_since(replicas[host], seen["since"] - 1)
                        for host in seen["serving"]), 30,
            what="every replica serving our sockets logged its resync")
        await await_until(lambda: http_status(f"{stack.http_url}/readyz", 5) == 200, 30,
                          what="/readyz 200 through nginx after the Redis restart")

    verdict, load = await run_compose_fault(compose_stack, "compose Redis restart", inject)
    fault_table.append(verdict)
    assert seen["restarted"], "redis container was not restarted"
    assert seen["serving"] <= set(seen["replicas"]), (seen["serving"], seen["replicas"])
    # Sockets ride out the restart: no client was disconnected by it (the only
    # closes allowed are the balancer's, counted from the replicas' logs), and
    # nothing was lost.
    closes = Counter(o.code for c in load.all_clients() for o in c.outages)
    moved = await asyncio.to_thread(rebalance_closes, compose_stack, seen["load_since"] - 1)
    assert set(closes) <= {1012} and closes[1012] <= moved, \
        f"sockets were closed by the Redis restart: {dict(closes)} ({moved} moved by the rebalancer)"
    assert_no_loss(verdict)


async def test_redis_frozen(compose_stack, fault_table):
    """`docker compose pause redis` (cgroup freezer: connections stay open, nothing answers)."""
    from tests.faults.gray import ack_p99

    seen: dict = {}

    async def inject(stack: ComposeStack, load):
        seen["from"] = time.monotonic()
        seen["load_since"] = load.started_at
        await asyncio.to_thread(stack.project.compose, "pause", "redis", timeout=60)
        try:
            await asyncio.sleep(15)  # the fault's duration
        finally:
            await asyncio.to_thread(stack.project.compose, "unpause", "redis", timeout=60)
        seen["until"] = time.monotonic()

    verdict, load = await run_compose_fault(compose_stack, "compose Redis frozen 15s", inject)
    seen["p99"], seen["n"] = ack_p99(load, seen["from"], seen["until"])
    verdict.extra = f"ack p99 during freeze {seen['p99']:.2f}s (n={seen['n']})"
    fault_table.append(verdict)
    assert seen["n"] >= 20, f"only {seen['n']} sends during the freeze"
    assert seen["p99"] <= 1.0, f"ack p99 {seen['p99']:.2f}s during the Redis freeze > 1 s"
    closes = Counter(o.code for c in load.all_clients() for o in c.outages)
    verdict.extra += f"; closes {dict(closes) or 0}"
    # The targets for a Redis hang are the ack time and 0 lost / 0 duplicated;
    # no socket is closed by the freeze either: the only closes allowed are the
    # balancer's (rebalance_closes), which moves a load that landed on one replica.
    moved = await asyncio.to_thread(rebalance_closes, compose_stack, seen["load_since"] - 1)
    assert set(closes) <= {1012} and closes[1012] <= moved, \
        f"sockets were closed by the Redis freeze: {dict(closes)} ({moved} moved by the rebalancer)"
    assert_no_loss(verdict)
