"""The chat WebSocket consumer: one socket's half of the hot path.

Flow of one message: receive() validates and rate-limits, then hands the text
to its worker's chat.delivery.writer.Writer, which stores it FIRST (so an id exists only
for stored messages; many messages per statement under load), acknowledges the
sender, and publishes the serialised JSON once to the room group (Redis
pub/sub). On every worker, chat.delivery.fanout's Room for that room hands the text to
its local sockets in id order, filling gaps from Postgres, so each socket sees
every id exactly once, whichever worker published it and whatever Redis lost.
"""
import asyncio
import json
import logging
import time

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.crypto import salted_hmac

from wsworker import registry
from wsworker.frames import SCOPE_FRAMES

from . import credentials, protocol
from .auth import query_params
from .delivery import fanout

logger = logging.getLogger(__name__)


def _storable(text: str) -> bool:
    """Postgres text is UTF-8: lone surrogates (valid in JSON escapes) cannot be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def anon_name(scope) -> str:
    """A stable pseudonym: same session (or same client address) → same name.

    Keyed with SECRET_KEY so the name reveals nothing about the session key.
    """
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    if key:
        basis = f"session:{key}"
    else:
        host, port = (scope.get("client") or ("?", "?"))[:2]
        basis = f"client:{host}:{port}"
    return "anon-" + salted_hmac("chat.anon-name", basis).hexdigest()[:4]


class TokenBucket:
    """Per-connection rate limit; monotonic clock so wall-clock jumps don't matter."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ChatConsumer(AsyncWebsocketConsumer):
    # No channel-layer channel per socket: the worker's Room (chat.delivery.fanout) holds the
    # one subscription per room and hands messages to its sockets (deliver()). An alias that is not
    # configured makes Channels skip the per-socket channel and its receive task.
    channel_layer_alias = "chat.fanout"
    room = None
    hub = None
    last_id = 0  # every id <= last_id has been sent to this socket, in order
    closed = False
    in_flight = 0  # messages handed to the Writer, not yet stored or refused
    settling = None
    frames = None  # (frame, send): the server's raw-frame extension, when it offers one
    credential = None  # ("token", id) or ("session", key): rechecked by chat.credentials

    async def __call__(self, scope, receive, send):
        """channels' AsyncConsumer.__call__ for a consumer with one source of events.

        Without a channel-layer channel the socket's receive() is the only source,
        so it is read directly: channels' await_many_dispatch would keep an extra
        Task and an asyncio.wait per idle socket (~2 KiB; 20 MiB per 10,000).
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also on cancellation (daphne's close timeout), when disconnect() never ran.
            self._leave()

    @property
    def movable(self) -> bool:
        """wsworker.rebalance may move this socket (registry contract): welcomed,
        caught up and added to its Room (Room.attach), no message of its own
        still being stored. A property, not state: nothing more per socket."""
        hub = self.hub
        return not self.closed and not self.in_flight and hub is not None and self in hub.sockets

    def _leave(self):
        registry.live.discard(self)
        self.closed = True
        if self.hub is not None:
            hub, self.hub = self.hub, None
            hub.leave(self)

    async def dispatch(self, message):
        """Route to the handler WITHOUT channels' per-message aclose_old_connections.

        Channels >= 4.2 awaits aclose_old_connections() (a hop to a worker thread)
        before every handler, i.e. once per frame a client sends: for publishers
        that hop costs as much as the rest of the handler. It is redundant here because
        every DB access goes through database_sync_to_async, whose thread wrapper
        already closes stale connections before and after each call.

        Errors in one frame are logged and swallowed so one bad event cannot take
        the socket (or the worker's other sockets) down.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.error("ws no handler for event type %r", message.get("type"))
            return
        try:
            await handler(message)
        except StopConsumer:
            raise
        except Exception:
            logger.exception("ws handler %s failed room=%s", message.get("type"), self.room)

    async def _refuse(self, code: int, reason: str, frame: str | None = None):
        """Accept then close so browsers see the close code (a rejected handshake hides it);
        `frame`, when given, is sent first (e.g. the retry hint of a 1013)."""
        logger.info("ws refused code=%s reason=%s path=%r", code, reason, self.scope.get("path"))
        registry.refusals[f"close {code} {reason.split(':')[0]}"] += 1
        self.closed = True
        await self.accept()
        if frame is not None:
            await self.send(text_data=frame)
        await self.close(code=code)

    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"].get("room", "")
        if registry.state.draining:
            return await self._refuse(protocol.CLOSE_RESTART, "draining")
        if not protocol.valid_room(self.room):
            return await self._refuse(protocol.CLOSE_BAD_ROOM, "invalid room name")
        after = None
        raw_after = query_params(self.scope).get("after")
        if raw_after is not None:
            value = raw_after[0]
            if not (value.isascii() and value.isdigit()) or len(value) > 18:
                return await self._refuse(protocol.CLOSE_BAD_ROOM, "invalid after")
            after = int(value)
        if self.scope.get("token_error"):
            return await self._refuse(protocol.CLOSE_UNAUTHORIZED, f"token {self.scope['token_error']}")
        user = self.scope.get("user")
        authenticated = bool(user is not None and user.is_authenticated)
        if not authenticated and not settings.CHAT_ALLOW_ANONYMOUS:
            return await self._refuse(protocol.CLOSE_UNAUTHORIZED, "anonymous not allowed")
        self.user_id = user.pk if authenticated else None
        if authenticated:
            self.credential = credentials.credential_of(self.scope, self.user_id)
        self.username = user.get_username() if authenticated else anon_name(self.scope)
        self.bucket = TokenBucket(settings.CHAT_RATE_PER_SEC, settings.CHAT_RATE_BURST)
        self.violations = 0
        hub = fanout.room(self.room)
        try:
            # Bounded: a frozen Redis (the room's first SUBSCRIBE) or a Postgres that is
            # down (history of a room this worker has not cached) gets a fast, defined
            # answer, long before daphne's handshake timeout (WS_CONNECT_TIMEOUT + 2 s)
            # or the pool's DB_POOL_TIMEOUT. Rooms served from the cache need neither.
            history, position = await asyncio.wait_for(hub.snapshot(after), settings.WS_CONNECT_TIMEOUT)
        except Exception as exc:
            hub.release()
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"[:200]
            logger.warning("ws connect: backends unavailable room=%s (%s)", self.room, why)
            retry = protocol.RETRY_AFTER_SECONDS
            return await self._refuse(
                protocol.CLOSE_OVERLOADED, "backend unavailable",
                protocol.error(protocol.ERR_UNAVAILABLE, f"backends unavailable; retry in {retry} s", retry))
        self.hub = hub
        try:
            await self.accept()
            registry.live.add(self)
            credentials.watch(self)
            self.frames = self.scope.get(SCOPE_FRAMES)
            self.last_id = position
            await self.send(text_data=protocol.welcome(registry.worker_id(), self.username, self.room, history, position))
        finally:
            # attach() gives the connect's hold on the Room back, whatever happens.
            await hub.attach(self)

    async def deliver(self, run, skip: int = 0):
        """Send the room messages run.texts[skip:] (chat.delivery.fanout.Run), in order.

        Under wsworker this is one write of frames built once per worker;
        under any other ASGI server it is one ASGI send per message.
        """
        if self.frames is not None:
            frame, send = self.frames
            if send(run.frames(frame, skip)):
                registry.deliveries["framed"] += 1
                return
        registry.deliveries["asgi"] += 1
        for text in run.texts[skip:]:
            await self.send(text_data=text)

    def deliver_now(self, run, skip: int = 0):
        """deliver() without awaiting, for a socket with frames (chat.delivery.fanout.Room._deliver_soon).

        A socket that refuses pre-built frames (one that negotiated compression, which
        wsworker never does) cannot get this run in order without awaiting: it is
        closed with 1012 and resumes from the last id it really received.
        """
        frame, send = self.frames
        if send(run.frames(frame, skip)):
            registry.deliveries["framed"] += 1
            return
        logger.error("ws socket refused pre-built frames room=%s; closing it to resume", self.room)
        self.closed = True
        asyncio.ensure_future(self.close(code=protocol.CLOSE_RESTART))

    async def disconnect(self, code):
        self._leave()

    async def _error(self, code: str, detail: str):
        registry.refusals[code] += 1
        if code != protocol.ERR_RATE_LIMITED:  # a flood would flood the log too; it is counted
            logger.info("ws error frame code=%s room=%s user=%s", code, self.room, self.username)
        await self.send(text_data=protocol.error(code, detail))

    async def receive(self, text_data=None, bytes_data=None):
        if self.closed:
            return
        if not self.bucket.take():
            self.violations += 1
            await self._error(protocol.ERR_RATE_LIMITED, "too many messages; slow down")
            if self.violations >= settings.CHAT_RATE_MAX_VIOLATIONS:
                logger.warning("ws rate limit close user=%s room=%s", self.username, self.room)
                registry.refusals[f"close {protocol.CLOSE_RATE_LIMIT} rate limit"] += 1
                await self._settle()
                self.closed = True
                await self.close(code=protocol.CLOSE_RATE_LIMIT)
            return
        if text_data is None:
            return await self._error(protocol.ERR_BAD_TYPE, "binary frames are not accepted; send JSON text")
        if len(text_data) > settings.WS_MAX_MESSAGE_BYTES:
            # daphne enforces the same limit in bytes (close 1009); this guards other servers.
            return await self._error(protocol.ERR_TOO_LONG, "frame larger than WS_MAX_MESSAGE_BYTES")
        try:
            data = json.loads(text_data)
        except (ValueError, RecursionError):
            # RecursionError: pathologically deep nesting is malformed input, not a crash.
            return await self._error(protocol.ERR_BAD_JSON, "frame is not valid JSON")
        if not isinstance(data, dict):
            return await self._error(protocol.ERR_BAD_TYPE, 'expected a JSON object {"message": "..."}')
        if data.get("type") == protocol.PING:
            return await self._send_text(protocol.PONG_FRAME)
        client_msg_id = data.get("client_msg_id")
        if client_msg_id is not None or "client_msg_id" in data:
            if not protocol.valid_client_id(client_msg_id):
                return await self._error(protocol.ERR_BAD_TYPE, 'field "client_msg_id" must be 1..64 of [A-Za-z0-9_-]')
        if "message" not in data:
            return await self._error(protocol.ERR_MISSING_FIELD, 'field "message" is required')
        text = data["message"]
        if not isinstance(text, str):
            return await self._error(protocol.ERR_BAD_TYPE, 'field "message" must be a string')
        text = text.strip()
        if not text:
            return await self._error(protocol.ERR_EMPTY, "message is empty")
        limit = settings.CHAT_MAX_MESSAGE_CHARS
        if len(text) > limit:
            return await self._error(protocol.ERR_TOO_LONG, f"message longer than {limit} characters")
        if "\x00" in text or not _storable(text):
            return await self._error(protocol.ERR_BAD_TYPE, "message contains NUL or unpaired surrogate characters")
        if not self.hub.submit(self, self.user_id, self.username, text, client_msg_id):
            return await self._error(protocol.ERR_UNAVAILABLE, "server busy: message not stored; try again later")
        self.in_flight += 1

    async def stored(self, msg_id: int, payload: str, client_msg_id=None):
        """The Writer stored our message (or found it stored: a resend): send it now if
        it is next in our sequence (the Room then skips it for this socket, id <=
        last_id), then the chat.ack when the message carried a client id."""
        self._landed()
        if self.closed:
            return
        if msg_id == self.last_id + 1:
            self.last_id = msg_id
            await self._send_text(payload)
        if client_msg_id is not None:
            await self._send_text(protocol.ack(client_msg_id, msg_id))

    async def _send_text(self, text: str):
        """One text frame, through the server's raw-frame fast path when it offers one."""
        if self.frames is not None:
            frame, send = self.frames
            if send(frame(text)):
                return
        await self.send(text_data=text)

    async def not_stored(self):
        self._landed()
        if not self.closed:
            await self._error(protocol.ERR_UNAVAILABLE, "message not stored; try again later")

    def _landed(self):
        self.in_flight -= 1
        if not self.in_flight and self.settling is not None and not self.settling.done():
            self.settling.set_result(None)

    async def close_unauthorized(self):
        """Close with 4401 once the credentials it was opened with ended (chat.credentials)."""
        if self.closed:
            return
        await self._settle()
        self.closed = True
        await self.close(code=protocol.CLOSE_UNAUTHORIZED)

    async def _settle(self, timeout: float = 5.0):
        """Before a policy close, let the messages we already accepted be stored and
        acknowledged, so the client learns their ids (a Future only when needed:
        every byte per socket counts at 10,000 sockets)."""
        if self.in_flight:
            self.settling = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.settling, timeout)
            except asyncio.TimeoutError:
                logger.warning("ws close: %d message(s) still being stored room=%s", self.in_flight, self.room)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: accept + 4404 so the client sees a clear reason."""

    async def connect(self):
        logger.info("ws unknown path %r", self.scope.get("path"))
        registry.refusals[f"close {protocol.CLOSE_NOT_FOUND} unknown path"] += 1
        await self.accept()
        await self.close(code=protocol.CLOSE_NOT_FOUND)
