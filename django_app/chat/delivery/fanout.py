"""Per-worker room fan-out: Redis → one Room per room per process → local sockets.

Why not one channel-layer channel per socket (the Channels default)? Under
fan-out that costs, per socket and per message, a queue hop, a msgpack decode, a
task switch and a dispatch; per connect, a Redis SUBSCRIBE under the layer's
lock. Here each worker process subscribes ONCE per room (one channel in the
room's group) and a Room object hands each message to its local sockets in id
order. Ordering, gap filling and the welcome history are then done once per
room per worker instead of once per socket:

- Ordering. Ids are dense per room (chat.delivery.store). Two workers can PUBLISH ids
  N and N+1 in the wrong order; the Room holds N+1 up to CHAT_REORDER_WAIT_MS
  for N, then reads the gap from Postgres (a publish Redis lost is still stored).
- History cache. The Room keeps the newest CHAT_ROOM_CACHE messages it has
  delivered, so a connect or resume within that window needs no query.
- Redis restarts. wsworker.layerwatch runs resubscribe_all() (registered in
  chat/apps.py): each Room subscribes on
  the new connection and reads what it missed from Postgres. Sockets stay open.
- Postgres outages. A gap fill that cannot reach Postgres is retried with
  backoff (DB_RETRY_*); the room's sockets stay open and catch up when it answers.

Invariant per socket: it has received exactly the ids <= consumer.last_id,
in order. Everything below keeps it.
"""
import asyncio
import itertools
import logging
import time
import weakref
from collections import deque

import psycopg
from channels.layers import get_channel_layer
from django import db as django_db
from django.conf import settings

from wsworker import layerwatch, registry as worker

from .. import metrics, protocol
from . import quiet, store
from .redislayer import listen
from .writer import writer

logger = logging.getLogger(__name__)

# A Room's reads run on the worker's read connection (chat.delivery.db): one
# statement each, no thread hop. With many small rooms nearly every connect opens one.
_snapshot = store.snapshot_async
_between = store.between_async

# Rooms per event loop: one loop per worker process in production, but tests run
# a loop per test and a Room's tasks must never outlive the loop they run on.
_rooms: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Room]]" = weakref.WeakKeyDictionary()

MESSAGE_TYPE = "chat.message"
CATCH_UP_ROUNDS = 1000  # bound on join/resync catch-up loops (each moves >= 1 message)
# A room that went quiet is checked against Postgres, batched per worker (chat.delivery.quiet).
QUIET_CHECK_SECONDS = quiet.QUIET_CHECK_SECONDS
# Most messages handed to the sockets in one go (one write per socket): bounds the
# write size and how long one room holds the loop.
RUN_MAX = 64
# A gap fill that fails because Postgres is unavailable is retried with exponential
# backoff (seconds); the room's sockets stay open meanwhile.
# Connection-level errors only (down, refused, pool timeout, connection lost): a
# broken query would fail the same way again, and still closes the sockets.
DB_ERRORS = (django_db.OperationalError, django_db.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)
DB_RETRY_BASE = 0.5
DB_RETRY_CAP = 5.0


def cache_size() -> int:
    """Messages a Room keeps for connects and resumes (the history must fit)."""
    return max(settings.CHAT_ROOM_CACHE, settings.CHAT_HISTORY_SIZE)


class Wake:
    """asyncio.Event for its ONE waiter, a Room's deliver loop, without Event's deque of
    waiters (~0.75 KiB even empty, per room of a worker). Same set/clear/wait semantics."""

    __slots__ = ("_set", "_waiter")

    def __init__(self):
        self._set = False
        self._waiter = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        if self._waiter is not None:
            raise RuntimeError("Wake has one waiter")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
            return True
        finally:
            self._waiter = None


def group_name(room: str) -> str:
    return f"room.{room}"


def rooms() -> dict:
    return _rooms.setdefault(asyncio.get_running_loop(), {})


def room(name: str) -> "Room":
    """The Room for `name` on this worker, created on first use; the caller joins it."""
    registry = rooms()
    found = registry.get(name)
    if found is None or found.closed:
        found = registry[name] = Room(name)
    found.joining += 1
    return found


def rooms_with_sockets() -> int:
    """Rooms with at least one local socket, on every loop of this process (metrics)."""
    return sum(1 for by_name in list(_rooms.values()) for r in by_name.values() if r.sockets)


async def resubscribe_all() -> None:
    """After a channel-layer flush (Redis restarted): every Room subscribes again."""
    for r in list(rooms().values()):
        r.resubscribe()


class Room:
    MESSAGE_TYPE = MESSAGE_TYPE

    def __init__(self, name: str):
        self.name = name
        self.group = group_name(name)
        self.waiting = 0  # messages submitted to the Writer, not yet stored or refused
        self.sockets: set = set()
        # Every socket that ever joined takes pre-built frames (wsworker): then a run can
        # be handed over without awaiting (_deliver_soon). One ASGI socket turns it off
        # for the Room's life; a process serves all its sockets with one server anyway.
        self.framed_only = True
        self.joining = 0  # connects in progress: the Room must not close under them
        self.closed = False
        self.position = 0  # highest id handed to the local sockets (contiguous)
        self.cache: "deque[str] | tuple" = ()  # a deque once there is something to keep (_remember)
        self.pending: dict[int, str] = {}  # ids that arrived ahead of a gap
        self.gap_since = None
        self.catch_up = False  # read Postgres for anything after position (resubscribe, quiet check)
        self.wake = Wake()
        # No deliver loop runs (_kick starts one): nothing of it is in flight (_feed).
        # False while the Room starts: what arrives meanwhile waits for _start's end.
        self.idle = False
        self.soon = False  # _deliver_soon is scheduled
        self.listener = None  # the Redis subscription (chat.delivery.redislayer.listen)
        self.deliverer = None  # the deliver loop's task while it has work (_kick)
        # The start, until it has succeeded; then None (a finished Task keeps its
        # coroutine: ~0.7 KiB per room of a worker, for nothing).
        self.started = asyncio.ensure_future(self._start())

    # ----------------------------------------------------------- lifecycle
    async def _start(self):
        """Subscribe first, then read the position: nothing committed after the read is missed."""
        await self._subscribe()
        rows, self.position = await _snapshot(self.name, None, cache_size(), 0)
        self._remember([protocol.dumps(m) for m in rows])
        self.started = None
        self.idle = True
        if self.pending or self.catch_up:
            self._kick()  # published while this Room started

    async def _subscribe(self):
        """One subscription per room on this worker; its messages reach _on_event() directly."""
        layer = get_channel_layer()
        for _ in range(CATCH_UP_ROUNDS):
            generation = layerwatch.generation
            listener = await listen(layer, self.group, self._on_event)
            if generation == layerwatch.generation:
                break  # no flush ran meanwhile: this subscription is on the live connection
        old, self.listener = self.listener, listener
        if old is not None:
            await old.stop()  # after the new one: the group stays subscribed throughout
        if self.closed:
            await self._unsubscribe()  # the Room closed while it subscribed

    def resubscribe(self):
        started = self.started  # None once the start succeeded
        if self.closed or (started is not None and (not started.done() or started.cancelled() or started.exception())):
            return  # a Room still starting checks the generation itself

        async def again():
            try:
                await self._subscribe()
            except Exception:
                logger.exception("room %s: resubscribe failed; closing its sockets", self.name)
                await self.fail()
                return
            self.catch_up = True
            self._kick()

        asyncio.ensure_future(again())

    def catch_up_now(self):
        """Postgres has newer ids than this Room delivered (quiet check): read them."""
        self.catch_up = True
        self._kick()

    def submit(self, consumer, user_id, username: str, text: str, client_msg_id=None) -> bool:
        """Hand a sender's message to this worker's Writer; False when the room is overloaded."""
        return writer().submit(self, consumer, user_id, username, text, client_msg_id)

    async def ready(self):
        if self.started is None:
            return
        try:
            await asyncio.shield(self.started)
        except Exception:
            if not self.closed:
                # The start failed (e.g. Postgres down after the SUBSCRIBE): give the
                # subscription back, or it would outlive the Room.
                self._discard()
                asyncio.ensure_future(self._close())
            raise

    def leave(self, consumer):
        self.sockets.discard(consumer)
        self._maybe_close()

    def release(self):
        """A connect that will not attach (refused or failed) gives its hold back."""
        self.joining -= 1
        self._maybe_close()

    def _maybe_close(self):
        if not self.sockets and self.joining <= 0 and not self.closed:
            self._discard()
            asyncio.ensure_future(self._close())

    def _discard(self):
        self.closed = True
        registry = rooms()
        if registry.get(self.name) is self:
            del registry[self.name]

    async def _close(self):
        self._cancel_deliverer()
        # A start still waiting on a frozen Redis finishes when it thaws (the connects
        # that waited for it were already refused: WS_CONNECT_TIMEOUT); one that failed
        # may have subscribed first. Either way: stop what it created, unsubscribe.
        if self.started is not None:
            await asyncio.wait([self.started])
        self._cancel_deliverer()
        await self._unsubscribe()

    async def _unsubscribe(self):
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                await listener.stop()
            except Exception:
                logger.warning("room %s: unsubscribing failed", self.name, exc_info=True)

    def _cancel_deliverer(self):
        task = self.deliverer
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    async def fail(self):
        """Delivery cannot continue in order: close the sockets; they resume from their last id."""
        self._discard()
        sockets, self.sockets = list(self.sockets), set()
        await worker.close_sockets(sockets, protocol.CLOSE_OVERLOADED, logger)
        await self._close()

    # ----------------------------------------------------------- joining
    async def snapshot(self, after):
        """(history texts, position) for a new socket: from the cache when it covers it."""
        await self.ready()
        hit = self._from_cache(after)
        if hit is not None:
            return hit
        rows, position = await _snapshot(self.name, after, settings.CHAT_HISTORY_SIZE, settings.CHAT_RESUME_MAX)
        return [protocol.dumps(m) for m in rows], position

    def _from_cache(self, after):
        cached, position = len(self.cache), self.position
        first = position - cached + 1  # id of cache[0]
        if after is None:
            want = min(settings.CHAT_HISTORY_SIZE, position)
            if want > cached:
                return None
            return list(itertools.islice(self.cache, cached - want, cached)), position
        if after > position or after + 1 < first:
            return None  # ahead of this worker (Postgres reset, or we lag) or older than the cache
        start = after + 1 - first
        stop = min(cached, start + settings.CHAT_RESUME_MAX)
        texts = list(itertools.islice(self.cache, start, stop))
        return texts, after + len(texts)

    async def attach(self, consumer):
        """Bring a welcomed socket up to the Room's position, then add it (no await in between)."""
        try:
            for _ in range(CATCH_UP_ROUNDS):
                if consumer.closed:
                    return
                if self.closed:
                    # The Room failed or was shed while we caught up: resume on a fresh one.
                    consumer.closed = True
                    await consumer.close(code=protocol.CLOSE_OVERLOADED)
                    return
                if consumer.last_id >= self.position:
                    if consumer.frames is None:
                        self.framed_only = False
                    self.sockets.add(consumer)
                    return
                texts = await self._texts_after(consumer.last_id)
                run = Run(texts, consumer.last_id + 1)
                consumer.last_id += len(texts)
                await consumer.deliver(run)
            raise RuntimeError(f"room {self.name}: socket could not catch up with the room")
        finally:
            self.release()

    async def _texts_after(self, last_id):
        """Up to CHAT_RESUME_MAX messages after last_id, from the cache or Postgres."""
        hit = self._from_cache(last_id)
        if hit is not None and hit[0]:
            return hit[0]
        hi = min(self.position, last_id + settings.CHAT_RESUME_MAX)
        rows = await _between(self.name, last_id + 1, hi)
        if [m["id"] for m in rows] != list(range(last_id + 1, hi + 1)):
            raise RuntimeError(f"room {self.name}: ids {last_id + 1}..{hi} are not all stored")
        return [protocol.dumps(m) for m in rows]

    # ----------------------------------------------------------- delivery
    def publish_local(self, msg_id: int, text: str):
        """A message this worker stored: its own sockets need no Redis round trip."""
        self._feed(msg_id, text)

    def _feed(self, msg_id: int, text: str):
        if msg_id > self.position and msg_id not in self.pending:
            self.pending[msg_id] = text
            if not self.idle:
                self.wake.set()
            elif not self.soon:
                # The loop sleeps: hand what arrives in this loop pass over in one
                # callback (_deliver_soon) rather than wake its task.
                self.soon = True
                asyncio.get_running_loop().call_soon(self._deliver_soon)
            if len(self.pending) > settings.CHAT_ROOM_MAX_BACKLOG and not self.closed:
                self._shed()

    def _deliver_soon(self):
        """The next ids of a room whose deliver loop is idle, to its framed sockets, right here.

        With many small rooms nearly every message is the next one of a sleeping room:
        waking its task (an Event, a task step, a coroutine per socket) costs more than
        the write. Scheduled once per loop pass, so what arrived meanwhile still goes
        out as one run. Only while the loop is idle and every socket takes pre-built
        frames (wsworker): nothing here awaits, so the order is the loop's own. A gap,
        a catch-up, more than RUN_MAX, or a socket without frames: the loop does it.
        """
        self.soon = False
        if (not self.idle or self.closed or self.catch_up or self.position + 1 not in self.pending
                or not self.framed_only):
            if self.pending or self.catch_up:
                self._kick()
            return
        texts = self._take_run()
        run = self._advance(self.position + 1, texts)
        for consumer in self._send_run(run, list(self.sockets)):
            skip = self._skip(consumer, run)
            if skip is None:
                continue
            try:
                consumer.deliver_now(run, skip)
            except Exception:
                logger.warning("room %s: send to one socket failed", self.name, exc_info=True)
        metrics.delivered(texts)
        if self.pending:
            self._kick()

    def _shed(self):
        """This worker cannot keep up with the room: shed it visibly rather than grow.

        Every local socket of the room gets 1013 (try again later) and the backlog
        is dropped from memory; clients back off and resume with ?after=, so
        nothing is lost. Logged, and counted on the worker's /healthz.
        """
        worker.shed("room backlog")  # close 1013, counted in refusals and sheds
        logger.warning("room %s: %d messages waiting > CHAT_ROOM_MAX_BACKLOG=%d; closing its %d socket(s) with %d",
                       self.name, len(self.pending), settings.CHAT_ROOM_MAX_BACKLOG, len(self.sockets),
                       protocol.CLOSE_OVERLOADED)
        self.pending.clear()
        asyncio.ensure_future(self.fail())

    def _on_event(self, event):
        """A message another worker (or this one) published to the room, as Redis read it."""
        if event.get("type") == MESSAGE_TYPE and not self.closed:
            self._feed(event["id"], event["text"])

    def _kick(self):
        """Work for the deliver loop: start it when none runs, else wake it."""
        if self.idle and not self.closed:
            self.idle = False
            self.wake.clear()
            self.deliverer = asyncio.ensure_future(self._deliver_loop())
        else:
            self.wake.set()

    async def _deliver_loop(self):
        """Runs while the Room has work, then ends (idle): a room of a worker that is
        quiet holds no task, coroutine or waiter (~1.1 KiB per room); _kick() starts it again."""
        try:
            await self._deliver()
        finally:
            self.idle = True
            if self.deliverer is asyncio.current_task():
                self.deliverer = None  # a finished Task would keep its coroutine

    async def _deliver(self):
        wait_s = settings.CHAT_REORDER_WAIT_MS / 1000
        failures = 0
        while True:
            if not self.pending and not self.catch_up:
                return  # no await since the check: nothing can have arrived
            try:
                if self.catch_up:
                    self.catch_up = False
                    await self._fill_from_db(None)
                if self.position + 1 in self.pending:
                    self.gap_since = None
                    await self._fanout(self.position + 1, self._take_run())
                    continue
                for stale in [i for i in self.pending if i <= self.position]:
                    del self.pending[stale]
                if not self.pending:
                    continue
                now = time.monotonic()
                if self.gap_since is None:
                    self.gap_since = now
                remaining = self.gap_since + wait_s - now
                if remaining > 0:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        pass
                    continue
                self.gap_since = None
                await self._fill_from_db(min(self.pending) - 1)
            except asyncio.CancelledError:
                raise
            except DB_ERRORS as exc:
                # Postgres is down or slow: the sockets stay open and wait; this Room
                # reads what it misses once Postgres answers (backoff, capped).
                failures += 1
                delay = min(DB_RETRY_CAP, DB_RETRY_BASE * 2 ** min(failures - 1, 10))
                logger.warning("room %s: reading ids after %s failed (%s: %s); retrying in %.1fs",
                               self.name, self.position, type(exc).__name__, str(exc).strip()[:120], delay)
                self.catch_up = True
                await asyncio.sleep(delay)
                continue
            except Exception:
                logger.exception("room %s: delivery failed at id %s; closing its sockets", self.name, self.position)
                await self.fail()
                return
            failures = 0

    async def _fill_from_db(self, upto):
        """Deliver stored ids position+1..upto (or everything newer when upto is None)."""
        for _ in range(CATCH_UP_ROUNDS):
            hi = self.position + settings.CHAT_RESUME_MAX
            if upto is not None:
                hi = min(hi, upto)
            if hi <= self.position:
                return
            rows = await _between(self.name, self.position + 1, hi)
            first, texts = self.position + 1, []
            for m in rows:
                if m["id"] == first + len(texts):
                    texts.append(self.pending.pop(m["id"], None) or protocol.dumps(m))
            if texts:
                metrics.gap_filled(len(texts))
                await self._fanout(first, texts)
            if self.position < hi:
                if upto is None:
                    return  # read everything there is
                raise RuntimeError(f"gap fill incomplete: have {self.position}, need {hi}")

    def _take_run(self) -> list[str]:
        """The waiting texts that follow position without a gap (at most RUN_MAX), out of pending."""
        nxt, texts = self.position + 1, []
        while nxt in self.pending and len(texts) < RUN_MAX:
            texts.append(self.pending.pop(nxt))
            nxt += 1
        return texts

    def _advance(self, first: int, texts: list[str]) -> "Run":
        """Ids first..first+len(texts)-1 are the room's next: move position and cache.

        BEFORE the sends: a socket attaching meanwhile catches up from the cache and
        is not in the list the sends walk.
        """
        self.position = first + len(texts) - 1
        self._remember(texts)
        quiet.due(self)
        return Run(texts, first)

    def _remember(self, texts: list[str]):
        """Keep the newest texts in the history cache, made on the first: a room of a
        worker that never sees a message keeps no deque (~0.75 KiB even empty)."""
        if texts:
            if isinstance(self.cache, tuple):
                self.cache = deque(maxlen=cache_size())
            self.cache.extend(texts)

    def _skip(self, consumer, run: "Run"):
        """How many of the run's messages `consumer` already has, or None to skip it;
        its last_id moves to the run's end."""
        last = run.first + len(run.texts) - 1
        if consumer.closed or last <= consumer.last_id:
            return None  # e.g. the sender of the whole run, acknowledged directly
        skip = consumer.last_id + 1 - run.first  # > 0: the sender of the first few
        if skip < 0:
            # Cannot happen while attach() and the sender's ack keep the invariant;
            # if it ever does, the client resumes rather than sees a hole.
            logger.error("room %s: socket at %s got %s; closing it to resume",
                         self.name, consumer.last_id, run.first)
            self.sockets.discard(consumer)
            consumer.closed = True
            asyncio.ensure_future(consumer.close(code=protocol.CLOSE_RESTART))
            return None
        consumer.last_id = last
        return skip

    async def _fanout(self, first: int, texts: list[str]):
        """Hand ids first..first+len(texts)-1 to every local socket: one write each.

        Under load the Room takes every contiguous message that is waiting (up to
        RUN_MAX) at once, so a burst costs each socket one send, not one per message.
        """
        run = self._advance(first, texts)
        for consumer in self._send_run(run, list(self.sockets)):
            skip = self._skip(consumer, run)
            if skip is None:
                continue
            try:
                await consumer.deliver(run, skip)
            except Exception:
                logger.warning("room %s: send to one socket failed", self.name, exc_info=True)
        metrics.delivered(texts)  # publish-to-deliver lag, once per message per worker

    def _send_run(self, run: "Run", sockets: list) -> list:
        """Write `run` to every socket that is exactly one run behind and takes pre-built
        frames; return the others, for _skip() and deliver().

        That is nearly every socket of every run, so this is the fan-out's inner loop:
        per socket one comparison and one call of the server's send, nothing awaited
        (a socket's frames are written in the order its runs come). The rest (the
        sender, who already has the first few; a closed socket; an ASGI socket; one
        that refuses pre-built frames) take the general path, whose rules (_skip,
        deliver, deliver_now) are unchanged.
        """
        before = run.first - 1
        last = before + len(run.texts)
        rest = []
        frame = data = None
        sent = 0
        for consumer in sockets:
            frames = consumer.frames
            if frames is None or consumer.last_id != before or consumer.closed:
                rest.append(consumer)
                continue
            if frames[0] is not frame:
                frame = frames[0]
                data = run.frames(frame)
            try:
                taken = frames[1](data)
            except Exception:
                # As on the general path: logged, and the socket's position moves on.
                logger.warning("room %s: send to one socket failed", self.name, exc_info=True)
                taken = None
            if taken is False:
                rest.append(consumer)  # no pre-built frames (compression): deliver() decides
                continue
            consumer.last_id = last
            if taken:
                sent += 1
        if sent:
            worker.deliveries["framed"] += sent
        return rest


class Run:
    """Consecutive messages of a room, framed once for all the worker's sockets.

    With the server's raw-frame extension (wsworker offers it under daphne)
    each message is framed once per worker and each socket gets one write of the
    joined frames, instead of a framing and an ASGI send per socket per message.
    """

    __slots__ = ("texts", "first", "_frames", "_whole")

    def __init__(self, texts: list[str], first: int):
        self.texts = texts
        self.first = first  # the id of texts[0]
        self._frames = None
        self._whole = None

    def frames(self, frame, skip: int = 0) -> bytes:
        """texts[skip:] as WebSocket frames, built by the server's `frame` function."""
        if self._frames is None:
            self._frames = [frame(text) for text in self.texts]
        if skip:
            return b"".join(self._frames[skip:])
        if self._whole is None:
            self._whole = b"".join(self._frames)
        return self._whole
