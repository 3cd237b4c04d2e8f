"""Is a room's cross-worker delivery live? A sender on one worker, a receiver on another.

Why a dedicated probe: the fault load's clients sit on random workers and send
from every worker, so a worker fills a Redis gap from Postgres as soon as one of
its own sockets sends (gap fill), and a quiet room polls Postgres after 2 s. Both
hide a dead channel layer behind up-to-2 s latencies. Here the receiver's worker
has no sender in the room, so a message reaches it within RESUMED_LATENCY only
through Redis (or the watcher's resync right after Redis is back).

  probe = CrossWorker(sender_url, receiver_url, rooms); await probe.start()
  ... fault at t0 ...
  probe.resumed_at(room, t0)    # monotonic send time from which every probe arrived live (read it
                                # at the end: while probes are in flight it can be too early)
  probe.max_latency(room, t0)   # worst latency of a probe sent after t0 (a pause shows here)
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from clients.chatclient import ChatClient, room_url

RATE = 4.0  # probes per second per room, under CHAT_RATE_PER_SEC=5
RESUMED_LATENCY = 0.5  # a probe that arrives within this is live delivery, not a Postgres fill
SETTLE = 2.5  # a probe older than this has arrived or is late (a quiet room's Postgres check runs at 2 s)


class CrossWorker:
    def __init__(self, sender_base: str, receiver_base: str, rooms: list[str]):
        self.rooms = rooms
        self.sent: dict[str, dict[str, float]] = {room: {} for room in rooms}  # text -> monotonic send time
        self.arrived: dict[str, dict[str, float]] = {room: {} for room in rooms}
        self.acked: set[str] = set()
        self.senders = {room: ChatClient(room_url(sender_base, room)) for room in rooms}
        self.receivers = {room: ChatClient(room_url(receiver_base, room), on_message=self._arrival(room))
                          for room in rooms}
        self._tasks: list[asyncio.Task] = []

    def _arrival(self, room: str):
        def record(msg: dict) -> None:
            self.arrived[room].setdefault(msg.get("message", ""), time.monotonic())
        return record

    async def start(self) -> None:
        clients = [*self.senders.values(), *self.receivers.values()]
        await asyncio.gather(*(c.start() for c in clients))
        await asyncio.gather(*(c.wait_open(30) for c in clients))
        assert {c.worker for c in self.senders.values()}.isdisjoint(c.worker for c in self.receivers.values())
        self._tasks = [asyncio.create_task(self._send_loop(room)) for room in self.rooms]

    async def _send_loop(self, room: str) -> None:
        n, next_at = 0, time.monotonic()
        while True:
            text = f"probe-{room}-{n}"
            n += 1
            self.sent[room][text] = time.monotonic()
            with contextlib.suppress(Exception):
                await self.senders[room].send(text, timeout=30)
                self.acked.add(text)
            next_at = max(next_at + 1 / RATE, time.monotonic())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def latencies(self, room: str, since: float) -> list[tuple[float, float]]:
        """(send time, latency) of every acked probe sent after `since`; latency inf while missing.
        A probe never acked (its send cancelled at the end) was not stored: nobody gets it."""
        got = self.arrived[room]
        return [(t, got.get(text, float("inf")) - t) for text, t in self.sent[room].items()
                if t >= since and text in self.acked]

    def resumed_at(self, room: str, since: float) -> float | None:
        """Earliest send time after which every probe (settled ones) arrived live."""
        settled = [(t, lat) for t, lat in self.latencies(room, since) if t <= time.monotonic() - SETTLE]
        resumed = None
        for t, lat in settled:
            if lat > RESUMED_LATENCY:
                resumed = None
            elif resumed is None:
                resumed = t
        return resumed

    def live_for(self, room: str, since: float, seconds: float) -> bool:
        """Live delivery resumed and has held for `seconds` of settled probes."""
        resumed = self.resumed_at(room, since)
        return resumed is not None and time.monotonic() - SETTLE - resumed >= seconds

    def max_latency(self, room: str, since: float, until: float) -> float:
        return max((lat for t, lat in self.latencies(room, since) if t <= until), default=0.0)

    def missing(self) -> int:
        """Acked probes the receivers have not got."""
        return sum(1 for room in self.rooms for text in self.sent[room]
                   if text in self.acked and text not in self.arrived[room])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop()
        await asyncio.gather(*(c.stop() for c in [*self.senders.values(), *self.receivers.values()]),
                             return_exceptions=True)
