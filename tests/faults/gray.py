"""Helpers for the gray faults (a component that stops answering without closing):
a one-shot connect probe, the ack latency during a window, and SIGSTOP for a while.

A probe is ONE handshake attempt with no retry, so it shows exactly what nginx and
the worker answered: a welcome (and from which worker), a defined refusal (the
chat.error frame and the close code), an HTTP status (e.g. a 502), or nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.faults.load import p99


@dataclass
class Probe:
    started: float  # monotonic
    outcome: str  # "welcome", "refused", "http", "no answer"
    seconds: float
    worker: str | None = None
    close_code: int | None = None
    error: dict | None = None
    status: int | None = None


async def probe_connect(url: str, timeout: float) -> Probe:
    started = time.monotonic()
    probe = Probe(started, "no answer", 0.0)
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, open_timeout=None, proxy=None, close_timeout=1, ping_interval=None) as ws:
                first = json.loads(await ws.recv())
                if first.get("type") == "chat.welcome":
                    probe.outcome, probe.worker = "welcome", first.get("worker")
                else:
                    probe.outcome, probe.error = "refused", first
                    await ws.wait_closed()
                    probe.close_code = ws.close_code
    except InvalidStatus as exc:
        probe.outcome, probe.status = "http", exc.response.status_code
    except ConnectionClosed as exc:
        probe.outcome, probe.close_code = "refused", exc.rcvd.code if exc.rcvd else None
    except (TimeoutError, asyncio.TimeoutError, OSError):
        pass
    probe.seconds = time.monotonic() - started
    return probe


async def probe_series(url_for, every: float, count: int, timeout: float) -> list[Probe]:
    """`count` probes started `every` seconds apart (concurrently), url_for(i) each."""
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(probe_connect(url_for(i), timeout)))
        await asyncio.sleep(every)
    return list(await asyncio.gather(*tasks))


def ack_p99(load, since: float, until: float) -> tuple[float | None, int]:
    """p99 of the time to ack of sends started in [since, until), and how many there were."""
    window = [took for started, took in load.ack_times if since <= started < until]
    return p99(window), len(window)


async def stopped_for(pid: int, seconds: float) -> None:
    """SIGSTOP a process for `seconds` (the fault's duration), then SIGCONT it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
