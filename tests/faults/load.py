"""Continuous chat traffic for the fault suite, and the loss/duplicate accounting.

Why a separate module: every fault runs the same experiment (K clients sending
across rooms, a fault, recovery) and must be judged by the same rule: each
client's final sequence per room equals what Postgres persisted, and every text
a client sent is persisted exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from clients.chatclient import ChatClient, ClientStopped, State

from tests.faults.probes import await_until


def p99(values: list[float]) -> float | None:
    """Nearest-rank 99th percentile (exact for the small samples a fault yields)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class Verdict:
    """One row of the fault table, plus what the asserts need."""

    fault: str
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    reconnects: int = 0
    p99_reconnect: float | None = None
    catch_up: float | None = None
    resume: float | None = None  # fault -> live cross-worker delivery again (crossworker.py)
    errors: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    extra: str = ""  # what this fault measures beyond the common columns

    def row(self) -> list[str]:
        fmt = lambda v: "-" if v is None else f"{v:.2f}s"  # noqa: E731
        errs = ",".join(f"{k}:{v}" for k, v in sorted(self.errors.items())) or "-"
        return [self.fault, str(self.sent), str(self.lost), str(self.duplicated),
                str(self.reconnects), fmt(self.p99_reconnect), fmt(self.catch_up), fmt(self.resume), errs,
                self.extra or "-"]


HEADER = ["fault", "messages sent", "lost", "duplicated", "reconnects", "p99 reconnect", "time to catch up",
          "time to resume", "chat.error", "fault-specific"]


class RoomLoad:
    """``per_room`` clients in each room, each sending ``rate`` msg/s with an ack wait."""

    def __init__(self, url_for_room: Callable[[str], str], rooms: list[str], per_room: int,
                 rate: float, tag: str, send_timeout: float = 40.0):
        self.rooms = rooms
        self.rate = rate
        self.tag = tag
        self.send_timeout = send_timeout
        self.clients: dict[str, list[ChatClient]] = {
            room: [ChatClient(url_for_room(room), after=0) for _ in range(per_room)] for room in rooms
        }
        self.sent: dict[str, list[str]] = {room: [] for room in rooms}  # texts attempted
        self.acked = 0
        self.ack_times: list[tuple[float, float]] = []  # (monotonic send start, seconds to ack)
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._senders: list[asyncio.Task] = []
        self.started_at = time.time()  # wall clock of start(): servers' logs are read from here

    def all_clients(self) -> list[ChatClient]:
        return [c for cs in self.clients.values() for c in cs]

    async def start(self, open_timeout: float = 30.0) -> None:
        self.started_at = time.time()
        clients = self.all_clients()
        await asyncio.gather(*(c.start() for c in clients))
        await asyncio.gather(*(c.wait_open(open_timeout) for c in clients))
        for room, cs in self.clients.items():
            for i, client in enumerate(cs):
                self._senders.append(asyncio.create_task(self._send_loop(room, i, client)))

    async def _send_loop(self, room: str, idx: int, client: ChatClient) -> None:
        period = 1.0 / self.rate
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            text = f"{room}-{idx}-{n}"
            n += 1
            self.sent[room].append(text)
            started = time.monotonic()
            try:
                await client.send(text, timeout=self.send_timeout)
                self.acked += 1
                self.ack_times.append((started, time.monotonic() - started))
            except (TimeoutError, asyncio.TimeoutError, ClientStopped):
                self.failed.append(text)
            next_at = max(next_at + period, time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))

    async def stop_sending(self) -> None:
        """Let in-flight sends finish (each is bounded by send_timeout)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._senders), self.send_timeout + 5)

    async def wait_acks(self, more: int, timeout: float) -> None:
        """Wait until ``more`` further sends were acked: proof that traffic flows."""
        target = self.acked + more
        await await_until(lambda: self.acked >= target, timeout, what=f"{more} more acked sends")

    async def wait_caught_up(self, heads: dict[str, int], timeout: float) -> float:
        """Seconds until every client has every id up to its room's head."""
        started = time.monotonic()

        def done() -> bool:
            return all((c.last_id or 0) >= heads[room] for room, cs in self.clients.items() for c in cs)

        await await_until(done, timeout, interval=0.05, what="every client caught up")
        return time.monotonic() - started

    async def close(self) -> None:
        self._stop.set()
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in self.all_clients()), return_exceptions=True)

    def judge(self, fault: str, persisted: dict[str, list[tuple[int, str]]], since: float) -> Verdict:
        """Compare every client with Postgres. ``since``: monotonic time of the fault."""
        verdict = Verdict(fault=fault, sent=self.acked)
        reconnect_times = []
        for room, cs in self.clients.items():
            rows = persisted.get(room, [])
            ids = [i for i, _ in rows]
            if ids != list(range(1, len(ids) + 1)):
                verdict.problems.append(f"{room}: persisted ids are not dense 1..n")
            texts = Counter(t for _, t in rows)
            mine = self.sent[room]
            verdict.lost += sum(1 for t in mine if texts[t] == 0)
            verdict.duplicated += sum(texts[t] - 1 for t in mine if texts[t] > 1)
            want = set(ids)
            for client in cs:
                got = set(client.messages)
                verdict.lost += len(want - got)
                verdict.duplicated += client.duplicates
                extra = got - want
                if extra:
                    verdict.problems.append(f"{room}: client has ids never persisted: {sorted(extra)[:5]}")
                verdict.reordered += sum(1 for a, b in zip(client.sequence, client.sequence[1:]) if b <= a)
                if client.state is State.STOPPED:
                    verdict.problems.append(f"{room}: client stopped: {client.stop_reason}")
                for err in client.errors:
                    verdict.errors[err.get("code", "?")] += 1
                for outage in client.outages:
                    if outage.dropped_at >= since:
                        verdict.reconnects += 1
                        if outage.reconnect_seconds is not None:
                            reconnect_times.append(outage.reconnect_seconds)
        verdict.p99_reconnect = p99(reconnect_times)
        if self.failed:
            verdict.problems.append(f"{len(self.failed)} sends never acked, e.g. {self.failed[:3]}")
        return verdict
