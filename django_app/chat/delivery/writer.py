"""Group commit: one INSERT per room per worker for every message waiting to be stored.

Why: stored one by one, each message costs a hop to the worker's single
database thread, a statement and a commit, and its sender's next frame waits
for all of that. Under load that queue, not CPU, sets the knee. Here a
consumer hands its validated message to its room's Writer and goes on reading
frames; the Writer stores everything queued meanwhile in ONE statement
(chat.delivery.store.persist_many: ids stay dense and in arrival order), then, in that
order, acknowledges each sender and publishes each message. A sender's
messages therefore keep their order, and nothing is broadcast before it is stored.
"""
import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .. import metrics, protocol
from . import store

logger = logging.getLogger(__name__)

_persist_many = metrics.timed_store(database_sync_to_async(store.persist_many))  # counted, timed

BATCH_MAX = 500  # rows per statement: bounds one statement's size and lock time

# Writers with work in flight, also those of Rooms already closed (their last
# socket left while its messages were still being stored): the drain waits on these.
_running: set = set()


async def writes_done(timeout: float) -> bool:
    """Wait, bounded, until every Writer has stored and published its queue (drain)."""
    tasks = [t for t in _running if not t.done()]
    if not tasks:
        return True
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    return not pending


class Writer:
    """Owned by a chat.delivery.fanout.Room: stores, acknowledges, then publishes."""

    def __init__(self, room):
        self.room = room  # the Room: its name, group and local sockets
        self.queue: list = []  # (consumer, user_id, username, text)
        self.task = None

    def submit(self, consumer, user_id, username: str, text: str) -> bool:
        """Queue a message; False when this worker already has too many waiting (overload)."""
        if len(self.queue) >= settings.CHAT_ROOM_MAX_BACKLOG:
            return False
        self.queue.append((consumer, user_id, username, text))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
            _running.add(self.task)
            self.task.add_done_callback(_running.discard)
        return True

    async def _run(self):
        while self.queue:
            batch, self.queue = self.queue[:BATCH_MAX], self.queue[BATCH_MAX:]
            try:
                stored = await _persist_many(self.room.name, [item[1:] for item in batch])
            except Exception:
                logger.exception("room %s: storing %d message(s) failed", self.room.name, len(batch))
                for consumer, *_ in batch:
                    await _safely(consumer.not_stored())
                continue
            for (consumer, *_), msg in zip(batch, stored):
                await self._publish(consumer, msg)

    async def _publish(self, consumer, msg):
        payload = protocol.dumps(msg)
        # The sender first, straight away: it sees every accepted message even if it
        # is closed (rate limit, drain) before the Redis echo could arrive.
        await _safely(consumer.stored(msg["id"], payload))
        # This worker's other sockets need no Redis round trip either.
        self.room.publish_local(msg["id"], payload)
        try:
            await get_channel_layer().group_send(
                self.room.group, {"type": self.room.MESSAGE_TYPE, "id": msg["id"], "text": payload})
        except Exception:
            # Stored but not broadcast: the other workers' rooms catch up from
            # Postgres on their next gap, on a Redis resync, or on resume.
            logger.warning("room %s: group_send of id %s failed", self.room.name, msg["id"], exc_info=True)


async def _safely(coro):
    """One sender's closed socket must not stop the others' acknowledgements."""
    try:
        await coro
    except Exception:
        logger.warning("acknowledging a stored message failed", exc_info=True)
