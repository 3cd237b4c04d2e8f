"""Group commit across rooms: one INSERT per worker for every message waiting to be stored.

Why: stored one by one, each message costs a hop to the worker's single
database thread, a statement and a commit, and under load that queue, not
CPU, sets the knee. A consumer hands its validated message to this worker's
Writer and goes on reading frames; the Writer stores everything queued
meanwhile, in every room, in ONE statement (chat.delivery.store.persist_batch,
on the Writer's own async connection, chat.delivery.db: no thread hop; per
room, ids stay dense and in arrival order), then, in that order,
acknowledges each sender, hands the message to this worker's own sockets, and
queues its publish (chat.delivery.publisher). Nothing is broadcast before it is
stored, and a slow or frozen Redis never holds up the next batch. A resend (a
client_msg_id already stored in the room) is acknowledged with the original id
and never published again.

Under load the Writer lingers (CHAT_STORE_LINGER_MS): it waits that long
before its next statement when another message is expected meanwhile, that is
when the messages of about the last second arrive at one or more per wait, or
its last statement stored more than one (a burst). That statement, its publish,
and each other worker's read of it then carry several messages. At moderate
rates a batch would otherwise hold one or two: each would pay a statement, a
publish and the wake-ups of Postgres, Redis and every worker. In small rooms
this is a third to half of the ws and Postgres CPU per message
(docs/benchmarks.md). On a quiet worker a message is stored at once.

Per room, CHAT_ROOM_MAX_BACKLOG bounds what may wait: past it the sender gets
`unavailable` (overload), the room's other senders and other rooms go on.
"""
import asyncio
import logging
import math
import time
import weakref

from django.conf import settings
from psycopg import errors as pg_errors

from .. import metrics, protocol
from . import store
from .publisher import Publisher

logger = logging.getLogger(__name__)

_store_batch = metrics.timed_store(store.store_batch_async)  # counted, timed, sized

BATCH_MAX = 500  # rows per statement: bounds one statement's size and lock time
# Statements run again on a deadlock (rooms are locked in name order, so this is belt
# and braces) or when another worker stored the same client_msg_id concurrently (the
# rerun then finds that row and returns it as a duplicate).
STORE_RETRIES = 3
RATE_WINDOW_SECONDS = 1.0  # the arrival rate that decides a wait: messages of about the last second

# One Writer per event loop (one per worker process; tests run a loop per test).
_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Writer]" = weakref.WeakKeyDictionary()


def writer() -> "Writer":
    loop = asyncio.get_running_loop()
    found = _writers.get(loop)
    if found is None:
        found = _writers[loop] = Writer()
    return found


async def writes_done(timeout: float) -> bool:
    """Wait, bounded, until this worker has stored and published what it accepted (drain)."""
    found = _writers.get(asyncio.get_running_loop())
    if found is None:
        return True
    return await found.idle(timeout)


class Writer:
    def __init__(self):
        self.queue: list = []  # (room, consumer, user_id, username, text, client_msg_id)
        self.task = None
        self.publisher = Publisher()
        self.last_batch = 0  # messages the last statement stored: more than one means a burst
        self.rate = 0.0  # messages per second, decaying over RATE_WINDOW_SECONDS (_loaded)
        self.arrived = 0  # submitted since the rate was last updated
        self.rate_at = time.monotonic()

    def submit(self, room, consumer, user_id, username: str, text: str, client_msg_id=None) -> bool:
        """Queue a message; False when its room already has too many waiting (overload)."""
        if room.waiting >= settings.CHAT_ROOM_MAX_BACKLOG:
            return False
        room.waiting += 1
        self.arrived += 1
        self.queue.append((room, consumer, user_id, username, text, client_msg_id))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return True

    async def idle(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.task is not None and not self.task.done():
            _done, pending = await asyncio.wait([self.task], timeout=timeout)
            if pending:
                return False
        return await self.publisher.idle(max(0.0, deadline - loop.time()))

    async def _run(self):
        while self.queue:
            linger = settings.CHAT_STORE_LINGER_MS / 1000
            if linger and len(self.queue) < BATCH_MAX and self._loaded(linger):
                await asyncio.sleep(linger)
            batch, self.queue = self.queue[:BATCH_MAX], self.queue[BATCH_MAX:]
            self.last_batch = len(batch)
            rows = [(room.name, user_id, username, text, cid) for room, _c, user_id, username, text, cid in batch]
            try:
                stored = await self._store(rows)
            except Exception:
                logger.exception("storing %d message(s) failed", len(batch))
                for room, consumer, *_ in batch:
                    room.waiting -= 1
                    await _safely(consumer.not_stored())
                continue
            for (room, consumer, *_, cid), (msg, duplicate) in zip(batch, stored):
                room.waiting -= 1
                payload = protocol.dumps(msg)
                # The sender first, straight away: it sees every accepted message even if
                # it is closed (rate limit, drain) before the Redis echo could arrive.
                await _safely(consumer.stored(msg["id"], payload, cid))
                if duplicate:
                    continue  # a resend: stored and published when it first arrived
                # This worker's other sockets need no Redis round trip either.
                room.publish_local(msg["id"], payload)
                self.publisher.put(room.group, room.MESSAGE_TYPE, msg["id"], payload)

    def _loaded(self, linger: float) -> bool:
        """Is another message expected during a wait of `linger` seconds? Once per statement."""
        now = time.monotonic()
        decay = math.exp(-(now - self.rate_at) / RATE_WINDOW_SECONDS)
        self.rate = self.rate * decay + self.arrived / RATE_WINDOW_SECONDS
        self.arrived, self.rate_at = 0, now
        return self.last_batch > 1 or self.rate * linger >= 1

    async def _store(self, rows):
        for attempt in range(STORE_RETRIES + 1):
            try:
                return await _store_batch(rows)
            except (pg_errors.DeadlockDetected, pg_errors.UniqueViolation) as exc:
                if attempt == STORE_RETRIES:
                    raise
                logger.warning("storing %d message(s): %s, retrying", len(rows), type(exc).__name__)


async def _safely(coro):
    """One sender's closed socket must not stop the others' acknowledgements."""
    try:
        await coro
    except Exception:
        logger.warning("acknowledging a stored message failed", exc_info=True)
