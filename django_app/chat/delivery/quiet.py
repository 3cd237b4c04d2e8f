"""The quiet-room check: once per worker per interval, for all its rooms at once.

A publish can be lost while Redis stays up (a dropped subscriber connection
that redis-py re-established, a publish that timed out: chat.delivery.publisher).
Ids are dense, so the next message of the room reveals the gap and the Room
fills it from Postgres; but the LAST message of a burst has no next message.
So once a room has delivered something and then been quiet for
QUIET_CHECK_SECONDS, this worker compares its position with the room's newest
stored id, and a room that is behind catches up.

The check is batched: every QUIET_CHECK_SECONDS one query reads the newest id
of every room of this worker that went quiet since the last check. Its cost is
one query per worker per interval while there is traffic, none while idle: it
grows neither with the messages sent nor with the rooms they are spread over.
"""
import asyncio
import logging
import time
import weakref

from wsworker import ticks

from . import store

logger = logging.getLogger(__name__)

QUIET_CHECK_SECONDS = 2.0

_heads = store.heads_async  # on the worker's read connection: no thread hop
_checkers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Checker]" = weakref.WeakKeyDictionary()


def due(room) -> None:
    """`room` just delivered a message: check it once it has been quiet for a while."""
    loop = asyncio.get_running_loop()
    checker = _checkers.get(loop)
    if checker is None:
        checker = _checkers[loop] = Checker()
    checker.add(room)


class Checker:
    def __init__(self):
        self.rooms: dict = {}  # room -> monotonic time of its latest delivery
        self.task = None

    def add(self, room) -> None:
        self.rooms[room] = time.monotonic()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while self.rooms:
            await ticks.sleep(QUIET_CHECK_SECONDS)  # with the worker's other chores
            quiet_since = time.monotonic() - QUIET_CHECK_SECONDS
            ready = [room for room, last in self.rooms.items() if last <= quiet_since]
            for room in ready:
                del self.rooms[room]
            ready = [room for room in ready if not room.closed]
            if not ready:
                continue
            try:
                heads = await _heads([room.name for room in ready])
            except Exception as exc:
                # Postgres is down: try these rooms again next interval.
                logger.warning("quiet-room check of %d room(s) failed: %s", len(ready), exc)
                for room in ready:
                    self.rooms.setdefault(room, 0.0)
                continue
            for room in ready:
                if heads.get(room.name, 0) > room.position:
                    room.catch_up_now()
