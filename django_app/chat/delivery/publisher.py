"""Publishing stored messages to Redis: in order, bounded in time and memory.

The Writer stores and acknowledges first, then queues each publish here, so
the write path never waits on Redis: a frozen or slow Redis delays other
workers' deliveries, never a sender's acknowledgement or the next batch. A
publish that fails or takes longer than CHAT_PUBLISH_TIMEOUT_MS is dropped and
counted, and so is every publish queued behind it (a Redis that does not
answer one would make each of them wait out the timeout too): the messages are
stored, and the other workers' Rooms get them from Postgres (gap fill on the
next message, the quiet-room check, or the resync after Redis comes back).
PUBLISH_QUEUE_MAX bounds the queue the same way.

Whatever is queued goes out in one command per shard (chat.delivery.redislayer),
so a batch stored in one statement is also published in one round trip.
"""
import asyncio
import collections
import logging

from channels.layers import get_channel_layer
from django.conf import settings

from wsworker import registry as worker

from .redislayer import publish_many

logger = logging.getLogger(__name__)

PUBLISH_QUEUE_MAX = 50_000
PUBLISH_BATCH_MAX = 500  # publishes per command (chat.delivery.redislayer)


class Publisher:
    def __init__(self):
        self.queue: collections.deque = collections.deque()
        self.task = None
        self.failing = False  # log once per outage, count every drop

    def put(self, group: str, event_type: str, msg_id: int, text: str) -> None:
        if len(self.queue) >= PUBLISH_QUEUE_MAX:
            self.queue.popleft()
            self._dropped("queue full")
        self.queue.append((group, {"type": event_type, "id": msg_id, "text": text}))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def idle(self, timeout: float) -> bool:
        if self.task is None or self.task.done():
            return True
        _done, pending = await asyncio.wait([self.task], timeout=timeout)
        return not pending

    async def _run(self):
        layer = get_channel_layer()
        timeout = settings.CHAT_PUBLISH_TIMEOUT_MS / 1000
        while self.queue:
            count = min(len(self.queue), PUBLISH_BATCH_MAX)
            batch = [self.queue.popleft() for _ in range(count)]
            try:
                # asyncio.timeout, not wait_for: wait_for (3.11) runs the publish as a
                # Task of its own, two more loop passes per batch.
                async with asyncio.timeout(timeout):
                    await publish_many(layer, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                behind, self.queue = len(self.queue), collections.deque()
                self._dropped(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, count + behind)
                continue
            if self.failing:
                self.failing = False
                logger.warning("publish: Redis answers again")

    def _dropped(self, why: str, count: int = 1) -> None:
        worker.refusals["publish dropped"] += count
        if not self.failing:
            self.failing = True
            logger.warning("publish: dropped (%s); stored messages reach other workers from Postgres", why)
