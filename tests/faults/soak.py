"""Soak: hold N sockets for T minutes with heartbeats; report every tier's RSS.

Why: the stock stack kept its worker RSS at 165 MB after every socket closed
(65 MB at start). Leaks and unreturned memory only show over time, so this holds
real sockets through nginx, keeps them busy (WebSocket pings plus one chat
message per room per heartbeat), then closes them and reports RSS per tier at
start / peak / after close.

    scripts/soak                    # N=SOAK_SOCKETS (2000), T=SOAK_MINUTES (10)
    scripts/soak --short            # the CI variant: 300 sockets, 1 minute
    SOAK_SOCKETS=500 SOAK_MINUTES=3 scripts/soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass, field

from clients.chatclient import ChatClient
from tests.faults.crowd import close_crowd, dropped, open_crowd, worker_sockets
from tests.faults.probes import await_until, tree_rss

# nginx limits concurrent connections per client IP (NGINX_MAX_CONN_PER_IP=200):
# the soak spreads its sockets over 127.0.0.x source addresses below that.
PER_SOURCE_IP = 150
MB = 1024 * 1024


@dataclass
class SoakReport:
    sockets: int
    minutes: float
    heartbeats: int = 0
    dropped: int = 0
    missed: int = 0
    rss: dict[str, dict[str, float]] = field(default_factory=dict)  # tier -> start/peak/after (MB)

    def table(self) -> str:
        lines = [f"soak: N={self.sockets} sockets, T={self.minutes:.3g} min, {self.heartbeats} heartbeat rounds, "
                 f"{self.dropped} dropped, {self.missed} heartbeat messages missed",
                 "| tier | RSS start | RSS peak | RSS after close | growth after close |",
                 "|---|---|---|---|---|"]
        for tier, v in self.rss.items():
            lines.append(f"| {tier} | {v['start']:.0f} MB | {v['peak']:.0f} MB | {v['after']:.0f} MB | "
                         f"{v['after'] - v['start']:+.0f} MB |")
        return "\n".join(lines)


def tier_pids(stack) -> dict[str, int]:
    pids = {"nginx": stack.pid("nginx"), "web": stack.pid("web"), "redis": stack.pid("redis"),
            "db": stack.pid("db")}
    for i in range(1, len(stack.ws_worker_urls) + 1):
        pids[f"ws-{i}"] = stack.pid("ws", i)
    return {tier: pid for tier, pid in pids.items() if pid}


class RssSampler:
    """Samples each tier's process-tree RSS; keeps start, running peak, last."""

    def __init__(self, stack):
        self.pids = tier_pids(stack)
        self.rss = {tier: {"start": tree_rss(pid) / MB} for tier, pid in self.pids.items()}
        for v in self.rss.values():
            v["peak"] = v["start"]

    def sample(self) -> dict[str, float]:
        now = {tier: tree_rss(pid) / MB for tier, pid in self.pids.items()}
        for tier, mb in now.items():
            self.rss[tier]["peak"] = max(self.rss[tier]["peak"], mb)
        return now

    async def run(self, stop: asyncio.Event, every: float = 2.0) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                continue


async def soak(stack, sockets: int, minutes: float, heartbeat: float = 20.0, rooms: int = 20) -> SoakReport:
    """Hold the sockets; every ``heartbeat`` s one message per room must reach all of them."""
    report = SoakReport(sockets=sockets, minutes=minutes)
    sampler = RssSampler(stack)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    tag = uuid.uuid4().hex[:6]
    room_names = [f"soak-{tag}-{i}" for i in range(rooms)]
    clients: list[ChatClient] = []
    try:
        # ping_interval=heartbeat: WebSocket pings from the client, as browsers behind
        # proxies need; the server pings too (WS_PING_INTERVAL).
        clients = await open_crowd([stack.ws_base], room_names, sockets, per_ip=PER_SOURCE_IP,
                                   ping_interval=heartbeat, timeout=300)
        by_room = {room: [c for c in clients if c.url.endswith(f"/{room}/")] for room in room_names}
        until = time.monotonic() + minutes * 60
        while time.monotonic() < until:
            round_no = report.heartbeats = report.heartbeats + 1
            await asyncio.gather(*(cs[0].send(f"heartbeat-{room}-{round_no}", timeout=30)
                                   for room, cs in by_room.items()))
            try:
                await await_until(lambda: all((c.last_id or 0) >= round_no for c in clients), 30,
                                  interval=0.2, what=f"heartbeat {round_no} delivered to every socket")
            except AssertionError:
                report.missed += sum(1 for c in clients if (c.last_id or 0) < round_no)
            await asyncio.sleep(max(0.0, min(heartbeat, until - time.monotonic())))
        report.dropped = len(dropped(clients))
    finally:
        await close_crowd(clients)
    await await_until(lambda: sum(worker_sockets(stack)) == 0, 60, interval=0.5,
                      what="every worker back to 0 sockets")
    stop.set()
    await sampling
    after = await asyncio.to_thread(sampler.sample)
    for tier, mb in after.items():
        sampler.rss[tier]["after"] = mb
    report.rss = sampler.rss
    return report


def main(argv: list[str] | None = None) -> int:
    from tests.stack import NativeStack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="CI variant: 300 sockets for 1 minute")
    args = parser.parse_args(argv)
    sockets = 300 if args.short else int(os.environ.get("SOAK_SOCKETS", 2000))
    minutes = 1.0 if args.short else float(os.environ.get("SOAK_MINUTES", 10))
    workers = int(os.environ.get("SOAK_WORKERS", os.environ.get("WS_WORKERS", 2)))
    print(f"soak: starting a native stack with {workers} ws workers; N={sockets}, T={minutes:g} min", flush=True)
    with NativeStack(workers=workers) as stack:
        report = asyncio.run(soak(stack, sockets, minutes))
    print(report.table())
    ok = report.dropped == 0 and report.missed == 0
    print("soak: OK" if ok else "soak: FAILED (sockets dropped or heartbeats missed)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
