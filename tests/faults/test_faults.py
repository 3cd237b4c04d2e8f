"""The fault suite: each fault hits a busy 3-worker native stack; afterwards every
client's sequence per room must equal what Postgres persisted (0 lost, 0 duplicated).

Faults restore the stack (restart the worker, bring Redis/Postgres back) so the
next test starts from a healthy 3-worker stack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.faults.probes import await_until, http_status, pid_alive, pid_reaped
from tests.faults.scenario import assert_no_loss, run_fault, worker_index_of

pytestmark = pytest.mark.slow


def busiest_worker(stack, load, workers: int) -> int:
    """The worker holding most of our sockets, so the fault hits many clients."""
    counts = Counter(worker_index_of(stack, c.worker, workers) for c in load.all_clients())
    counts.pop(None, None)
    assert counts, "no client reported a known worker in its welcome"
    return counts.most_common(1)[0][0]


async def restart_worker(stack, index: int, old_pid: int) -> None:
    await await_until(lambda: pid_reaped(old_pid), 15, what=f"old ws-{index} reaped")
    await asyncio.to_thread(stack.start, f"ws-{index}")


async def test_kill9_worker(stack, fault_table):
    workers = len(stack.ws_worker_urls)
    killed = {}

    async def inject(stack, load):
        victim = busiest_worker(stack, load, workers)
        killed.update(index=victim, pid=stack.pid("ws", victim))
        on_victim = [c for c in load.all_clients() if worker_index_of(stack, c.worker, workers) == victim]
        os.kill(killed["pid"], signal.SIGKILL)
        # Clients must find the surviving workers through nginx, without the victim.
        await await_until(lambda: all(c.opens >= 2 for c in on_victim), 30,
                          what="clients of the killed worker reopened elsewhere")
        assert all(worker_index_of(stack, c.worker, workers) not in (victim, None) for c in on_victim)

    async def restore(stack, load):
        await restart_worker(stack, killed["index"], killed["pid"])

    verdict, load = await run_fault(stack, "kill -9 worker", inject, restore)
    fault_table.append(verdict)
    assert verdict.reconnects > 0, "the kill dropped no socket: it was not exercised"
    assert_no_loss(verdict)


async def test_sigterm_worker_drains(stack, fault_table):
    workers = len(stack.ws_worker_urls)
    drain = float(stack.settings["WS_DRAIN_SECONDS"])
    seen = {}

    async def inject(stack, load):
        victim = busiest_worker(stack, load, workers)
        pid = stack.pid("ws", victim)
        direct = stack.ws_worker_urls[victim - 1]
        on_victim = [c for c in load.all_clients() if worker_index_of(stack, c.worker, workers) == victim]
        os.kill(pid, signal.SIGTERM)
        seen["sigterm_at"] = time.monotonic()
        # Readiness fails at once, while the worker is still draining.
        status = await await_until(
            lambda: (s := http_status(f"{direct.replace('ws://', 'http://')}/readyz", timeout=1)) != 200 and (s or -1),
            3, interval=0.02, what=f"ws-{victim} /readyz != 200 after SIGTERM")
        seen["readyz"] = status
        # It takes no new socket: either refused or closed before any welcome.
        seen["new_socket"] = await _try_new_socket(f"{direct}/ws/chat/drain-probe/")
        await await_until(lambda: all(c.opens >= 2 for c in on_victim), drain + 5,
                          what="clients of the draining worker reopened elsewhere")
        seen.update(index=victim, pid=pid, codes=[o.code for c in on_victim for o in c.outages])

    async def restore(stack, load):
        await await_until(lambda: not pid_alive(seen["pid"]), drain + 5,
                          what=f"ws-{seen['index']} exits after SIGTERM")
        seen["exit_after"] = time.monotonic() - seen["sigterm_at"]
        await restart_worker(stack, seen["index"], seen["pid"])

    verdict, load = await run_fault(stack, "SIGTERM worker", inject, restore)
    fault_table.append(verdict)
    assert seen["readyz"] in (503, -1), f"draining worker answered /readyz with {seen['readyz']}"
    assert seen["new_socket"] != "welcome", "a draining worker accepted a new socket"
    assert seen["codes"] and all(code == 1012 for code in seen["codes"]), seen["codes"]
    assert seen["exit_after"] <= drain + 1, f"drain took {seen['exit_after']:.1f}s > WS_DRAIN_SECONDS={drain:g}"
    assert_no_loss(verdict)


async def _try_new_socket(url: str) -> str:
    """'welcome' if the worker served a new chat socket, else how it refused."""
    try:
        async with connect(url, open_timeout=3, proxy=None, close_timeout=1) as ws:
            frame = await asyncio.wait_for(ws.recv(), 3)
            return "welcome" if '"chat.welcome"' in frame else "other frame"
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None}"
    except (InvalidHandshake, OSError, asyncio.TimeoutError) as exc:
        return f"refused {type(exc).__name__}"


async def test_redis_restart(stack, fault_table):
    seen = {}

    async def inject(stack, load):
        await asyncio.to_thread(stack.stop, "redis")
        worker_readyz = [u.replace("ws://", "http://") + "/readyz" for u in stack.ws_worker_urls]
        seen["down"] = await await_until(
            lambda: all(http_status(u, 2) == 503 for u in worker_readyz) and True, 15,
            what="every ws worker /readyz 503 while Redis is down")
        # Sends made during the outage must be persisted and reach others on resume.
        sent_before = sum(len(v) for v in load.sent.values())
        await await_until(lambda: sum(len(v) for v in load.sent.values()) >= sent_before + 12, 20,
                          what="sends attempted during the Redis outage")
        await asyncio.to_thread(stack.start, "redis")
        await await_until(lambda: all(http_status(u, 2) == 200 for u in worker_readyz), 30,
                          what="ws workers ready again after Redis returned")

    verdict, load = await run_fault(stack, "Redis restart", inject)
    fault_table.append(verdict)
    assert seen["down"]
    # Rooms resubscribe on the new Redis and read the gap from Postgres: no socket is dropped.
    assert verdict.reconnects == 0, verdict
    assert_no_loss(verdict)


async def test_postgres_restart(stack, fault_table):
    async def inject(stack, load):
        readyz = f"{stack.http_url}/readyz"
        await asyncio.to_thread(stack.stop, "db")
        await await_until(lambda: http_status(readyz, 5) == 503, 20, what="/readyz 503 while Postgres is down")
        # A send during the outage is refused visibly (chat.error unavailable), not dropped.
        await await_until(
            lambda: any(e.get("code") == "unavailable" for c in load.all_clients() for e in c.errors), 30,
            what="a chat.error 'unavailable' while Postgres is down")
        await asyncio.to_thread(stack.start, "db")
        await await_until(lambda: http_status(readyz, 5) == 200, 60, what="/readyz 200 after Postgres returned")

    verdict, load = await run_fault(stack, "Postgres restart", inject)
    fault_table.append(verdict)
    assert verdict.errors["unavailable"] > 0
    assert_no_loss(verdict)


async def test_nginx_reload(stack, fault_table):
    async def inject(stack, load):
        await asyncio.to_thread(stack.reload_nginx)
        await await_until(lambda: http_status(f"{stack.http_url}/nginx-health") == 200, 10,
                          what="nginx answering after reload")

    verdict, load = await run_fault(stack, "nginx reload", inject)
    fault_table.append(verdict)
    assert_no_loss(verdict)
