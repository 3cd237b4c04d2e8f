"""Resilient chat client: reconnect with backoff, resume with ``?after=``, drop duplicate ids.

Why it exists: the server gives every persisted message a dense per-room id and
replays ``id > N`` on ``?after=N`` (docs/architecture.md). A client that remembers
its highest *contiguous* id and reconnects can therefore lose nothing across worker
deaths, drains and outages. The tests, the fault suite, the soak and the bench all
use this one client so they measure what a real user gets.

Close-code policy (the contract's table):
  * 1012 (worker draining)            -> reconnect at once, resume.
  * 4400/4401/4403/4404 (policy)      -> stop; retrying cannot help.
  * 1013/4429 and anything abnormal   -> reconnect with exponential backoff + full jitter.
Reconnects are bounded: ``Backoff.max_attempts`` consecutive failures stop the client.

Idempotent sends: every ``send()`` carries a random ``client_msg_id`` (a UUID); the
server stores it once per room and answers ``chat.ack`` with the id (the original
one for a resend). So a message not acknowledged when the socket dropped is simply
sent again, with the same id, after the reconnect: never stored twice.

Heartbeat: every ``heartbeat`` seconds (HEARTBEAT_SECONDS) the client sends
``{"type": "ping"}``; when nothing at all (no pong, no message) arrived for two
intervals the worker is presumed hung: the socket is dropped and the client
reconnects (backoff + resume), through nginx to a worker that answers. A connect
that gets no welcome within ``open_timeout`` is abandoned and retried the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger("chatclient")

STOP_CODES = frozenset({4400, 4401, 4403, 4404})
RECONNECT_NOW_CODES = frozenset({1012})
# chat.error codes after which resending the same text later can succeed.
RETRYABLE_ERRORS = frozenset({"unavailable", "rate_limited"})
# Application heartbeat: a ping every this many seconds; two intervals of silence = hung worker.
HEARTBEAT_SECONDS = 10.0


class State(str, enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class ChatError(Exception):
    """A ``chat.error`` frame that resending cannot fix (bad input)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ClientStopped(Exception):
    """The client stopped (policy close, gave up, or stop()) while a caller waited."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter.

    Full jitter (delay drawn uniformly in [0, min(cap, base*2^n)]) spreads a herd of
    clients that lost the same worker, so the survivors are not hit in lockstep.
    """

    base: float = 0.2
    cap: float = 5.0
    max_attempts: int = 40

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, min(self.cap, self.base * (2 ** min(attempt, 30))))


@dataclass
class Outage:
    """One drop -> reopen cycle; the fault suite reads reconnect and catch-up times here."""

    code: int | None
    dropped_at: float
    attempts: int = 0
    reopened_at: float | None = None
    head_at_reopen: int | None = None
    caught_up_at: float | None = None

    @property
    def reconnect_seconds(self) -> float | None:
        return None if self.reopened_at is None else self.reopened_at - self.dropped_at

    @property
    def catch_up_seconds(self) -> float | None:
        return None if self.caught_up_at is None else self.caught_up_at - self.dropped_at


def room_url(ws_base: str, room: str) -> str:
    """``ws://host:port`` + room -> the contract's socket URL."""
    return f"{ws_base.rstrip('/')}/ws/chat/{room}/"


def _with_query(url: str, **params: Any) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in params.items() if v is not None})
    return urlunsplit(parts._replace(query=urlencode(query)))


class ChatClient:
    """One room socket that keeps itself connected and gap-free.

    ``after=0`` asks for the whole room from id 1 (what the fault suite needs);
    ``after=None`` starts from the welcome's recent history like the web page.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        after: int | None = None,
        backoff: Backoff = Backoff(),
        open_timeout: float = 5.0,  # connect + welcome; above the server's WS_CONNECT_TIMEOUT (3 s)
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        origin: str | None = None,
        resend_grace: float = 1.0,
        keep_messages: bool = True,
        on_message: Callable[[dict], None] | None = None,
        local_addr: tuple[str, int] | None = None,
        heartbeat: float | None = HEARTBEAT_SECONDS,
    ):
        self.url = url
        self.token = token
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.origin = origin
        self.resend_grace = resend_grace  # only for send(..., client_id=False)
        self.heartbeat = heartbeat
        self.keep_messages = keep_messages
        self.on_message = on_message
        # Source address: spreading many sockets over 127.0.0.x keeps each under
        # nginx's per-IP limit_conn, so load tests still go through nginx.
        self._connect_extra = {"local_addr": local_addr} if local_addr else {}

        self.state = State.CONNECTING
        self.last_id: int | None = after  # highest contiguous id received
        self.max_id: int = after or 0
        self.messages: dict[int, dict | None] = {}
        self.sequence: list[int] = []  # ids in arrival order, duplicates dropped
        self.duplicates = 0  # ids the server sent twice (dropped here)
        self.out_of_order = 0  # ids that arrived ahead of a gap
        self.outages: list[Outage] = []
        self.close_codes: list[int | None] = []
        self.errors: list[dict] = []
        self.opens = 0
        self.worker: str | None = None
        self.user: str | None = None
        self.stop_reason: str | None = None
        self.heartbeat_drops = 0  # sockets dropped because the worker stopped answering
        self.acks: dict[str, int] = {}  # client_msg_id -> id, from chat.ack
        self.retry_after: float = 0.0  # the server's hint with its last refusal
        self._last_rx = 0.0

        self._ws = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._opened_this_round = False
        self._changed = asyncio.Condition()
        self._conn_lost: asyncio.Future | None = None
        self._waiters: dict[str, asyncio.Future] = {}  # by text (echo) and by client_msg_id (ack)
        self._error_fut: asyncio.Future | None = None
        self._send_lock = asyncio.Lock()
        self._catching_up: Outage | None = None

    # --- lifecycle ------------------------------------------------------------
    async def start(self, wait_open: float | None = None) -> "ChatClient":
        """Start the connection loop; optionally wait (bounded) for the first open."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"chatclient {self.url}")
        if wait_open is not None:
            await self.wait_open(wait_open)
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Close with 1000 and end the loop; never reconnects afterwards."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1000, "client stop"), timeout)
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, timeout)
        await self._set_state(State.STOPPED, self.stop_reason or "stopped by caller")

    async def __aenter__(self) -> "ChatClient":
        return await self.start(wait_open=self.open_timeout)

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- observation ----------------------------------------------------------
    @property
    def gaps(self) -> list[int]:
        """Ids above the contiguous head that have not arrived (should stay empty)."""
        if self.last_id is None:
            return []
        return [i for i in range(self.last_id + 1, self.max_id) if i not in self.messages]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until predicate() holds, re-checked on every frame and state change."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_open(self, timeout: float) -> None:
        await self.wait_for(lambda: self.state in (State.OPEN, State.STOPPED), timeout)
        if self.state is State.STOPPED:
            raise ClientStopped(self.stop_reason)

    async def wait_caught_up(self, head: int, timeout: float) -> None:
        """Wait until every id up to ``head`` has arrived."""
        await self.wait_for(lambda: (self.last_id or 0) >= head or self.state is State.STOPPED, timeout)
        if (self.last_id or 0) < head:
            raise ClientStopped(self.stop_reason)

    # --- sending --------------------------------------------------------------
    async def send(self, text: str, *, timeout: float = 30.0, wait: bool = True,
                   client_id: bool | str = True) -> int | None:
        """Send ``text`` and return its id once it is acknowledged.

        With a client id (the default: a fresh UUID, or the string given) the ack
        is the server's ``chat.ack``, and a send cut by a disconnect is resent
        after the reconnect with the same id: the server stores it once.
        ``client_id=False`` sends the legacy frame: the echo of ``text`` (which
        must then be unique for this client) is the ack, and a resend waits for
        the resume (plus ``resend_grace``) to bring it back first.
        Retries on retryable chat.error codes until ``timeout``; bad input raises
        ChatError at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cid = (uuid.uuid4().hex if client_id is True else client_id) or None
        async with self._send_lock:
            ack = loop.create_future()
            self._waiters[cid or text] = ack
            try:
                return await self._send_until_acked(text, cid, ack, deadline, wait)
            finally:
                self._waiters.pop(cid or text, None)
                self._error_fut = None

    async def _send_until_acked(self, text: str, cid: str | None, ack: asyncio.Future, deadline: float,
                                wait: bool) -> int | None:
        loop = asyncio.get_running_loop()
        frame = json.dumps({"message": text, "client_msg_id": cid} if cid else {"message": text})
        grace = 0.0 if cid else self.resend_grace
        retries = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no ack for {text!r}")
            await self.wait_open(remaining)
            if ack.done():
                return ack.result()
            ws, lost = self._ws, self._conn_lost
            if ws is None or lost is None or lost.done():
                continue  # dropped between open and here: wait for the next open
            self._error_fut = loop.create_future()
            try:
                await ws.send(frame)
            except ConnectionClosed:
                await self._wait_reopen_or_ack(ack, lost, deadline, grace)
                continue
            if not wait:
                return None
            done, _ = await asyncio.wait(
                {ack, self._error_fut, lost}, timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if ack.done():
                return ack.result()
            if self._error_fut in done:
                err = self._error_fut.result()
                if err.get("code") not in RETRYABLE_ERRORS:
                    raise ChatError(err.get("code", "?"), err.get("detail", ""))
                retries += 1
                await asyncio.sleep(min(self.backoff.delay(retries), max(0.0, deadline - loop.time())))
                continue
            if lost in done:
                await self._wait_reopen_or_ack(ack, lost, deadline, grace)
                continue
            raise TimeoutError(f"no ack for {text!r}")

    async def _wait_reopen_or_ack(self, ack: asyncio.Future, lost: asyncio.Future, deadline: float,
                                  grace: float) -> None:
        """After a drop, wait for the next open. Without a client id, also let the
        resume (and a short live grace) bring the text back before resending: a
        worker may have stored it just before dying."""
        loop = asyncio.get_running_loop()
        await self.wait_open(max(0.0, deadline - loop.time()))
        if not ack.done() and grace > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(ack), min(grace, max(0.0, deadline - loop.time())))

    # --- connection loop ------------------------------------------------------
    async def _set_state(self, state: State, reason: str | None = None) -> None:
        if state is State.STOPPED:
            self.stop_reason = self.stop_reason or reason
        if self.state is not state:
            log.debug("%s: %s -> %s (%s)", self.url, self.state.value, state.value, reason)
        self.state = state
        async with self._changed:
            self._changed.notify_all()

    def _connect_url(self) -> str:
        return _with_query(self.url, token=self.token, after=self.last_id)

    async def _run(self) -> None:
        attempt = 0
        outage: Outage | None = None
        try:
            while not self._stopping:
                code, stop_reason, resume_now = await self._one_connection(outage)
                if self._stopping:
                    break
                if resume_now:  # capped replay: same outage, continue at once
                    continue
                if self._opened_this_round:
                    attempt = 0
                    outage = Outage(code=code, dropped_at=time.monotonic())
                    self.outages.append(outage)
                self.close_codes.append(code)
                if stop_reason:
                    await self._set_state(State.STOPPED, stop_reason)
                    return
                await self._set_state(State.RECONNECTING, f"closed {code}")
                delay = 0.0 if (code in RECONNECT_NOW_CODES and attempt == 0) else self.backoff.delay(attempt)
                if self.retry_after:  # the server's hint with a refusal (close 1013)
                    delay, self.retry_after = max(delay, self.retry_after * random.uniform(1.0, 1.5)), 0.0
                attempt += 1
                if outage is not None:
                    outage.attempts = attempt
                if attempt > self.backoff.max_attempts:
                    await self._set_state(State.STOPPED, f"gave up after {attempt - 1} attempts (last close {code})")
                    return
                await asyncio.sleep(delay)
        finally:
            if self.state is not State.STOPPED:
                await self._set_state(State.STOPPED, "stopped by caller" if self._stopping else "loop ended")

    async def _one_connection(self, outage: Outage | None) -> tuple[int | None, str | None, bool]:
        """Run one socket to its end. Returns (close code, stop reason, resume at once)."""
        self._opened_this_round = False
        loop = asyncio.get_running_loop()
        resume_now = False
        ws = None
        try:
            async with connect(
                self._connect_url(),
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                close_timeout=2,
                compression=None,  # keeps thousands of test sockets cheap
                proxy=None,  # loopback tests must never go through an env proxy
                origin=self.origin,
                max_size=2**22,
                max_queue=None,  # never apply backpressure to the server mid-catch-up
                **self._connect_extra,
            ) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
                if welcome.get("type") == "chat.error":
                    # A refusal with a reason (backends unavailable): the close follows.
                    self.errors.append(welcome)
                    self.retry_after = float(welcome.get("retry_after") or 0)
                    await asyncio.wait_for(ws.wait_closed(), self.open_timeout)
                    return ws.close_code, None, False
                if welcome.get("type") != "chat.welcome":
                    return None, f"first frame is not chat.welcome: {welcome.get('type')!r}", False
                self._ws = ws
                self._conn_lost = loop.create_future()
                self._opened_this_round = True
                self._last_rx = loop.time()
                resume_now = await self._on_welcome(welcome, outage)
                if resume_now:
                    await ws.close(1000, "resume continues")
                else:
                    beat = asyncio.create_task(self._heartbeat(ws)) if self.heartbeat else None
                    try:
                        async for raw in ws:
                            self._last_rx = loop.time()
                            await self._on_frame(raw)
                    finally:
                        if beat is not None:
                            beat.cancel()
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                return None, f"handshake refused with HTTP {status}", False
            return None, None, False
        except (ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            log.debug("%s: connection ended: %r", self.url, exc)
        finally:
            self._ws = None
            if self._conn_lost is not None and not self._conn_lost.done():
                self._conn_lost.set_result(True)
            if self.state is State.OPEN:
                await self._set_state(State.RECONNECTING, "socket closed")
        code = ws.close_code if ws is not None else None
        if code in STOP_CODES:
            return code, f"closed by server with policy code {code}", False
        return code, None, resume_now

    async def _heartbeat(self, ws) -> None:
        """Ping every interval; drop the socket after two intervals without any frame."""
        loop = asyncio.get_running_loop()
        interval = self.heartbeat
        next_ping = loop.time() + interval
        while True:
            silent_until = self._last_rx + 2 * interval
            await asyncio.sleep(max(0.0, min(next_ping, silent_until) - loop.time()))
            now = loop.time()
            if now >= self._last_rx + 2 * interval:
                self.heartbeat_drops += 1
                log.info("%s: no frame for %.1fs (heartbeat): dropping the socket", self.url, now - self._last_rx)
                ws.transport.abort()  # a hung worker would never answer a close handshake
                return
            if now >= next_ping:
                next_ping = now + interval
                with contextlib.suppress(ConnectionClosed):
                    await ws.send('{"type":"ping"}')

    async def _on_welcome(self, welcome: dict, outage: Outage | None) -> bool:
        """Apply the welcome; returns True when the resume was capped and must continue."""
        self.worker = welcome.get("worker")
        self.user = welcome.get("user")
        self.opens += 1
        history = welcome.get("history") or []
        head = int(welcome.get("last_id") or 0)
        if self.last_id is None:
            self.last_id = (history[0]["id"] - 1) if history else head
            self.max_id = max(self.max_id, self.last_id)
        for msg in history:
            self._accept(msg)
        now = time.monotonic()
        if outage is not None:
            outage.reopened_at = now
            outage.head_at_reopen = head
            if (self.last_id or 0) >= head:
                outage.caught_up_at = now
            else:
                self._catching_up = outage
        await self._set_state(State.OPEN, f"welcome from {self.worker}")
        # CHAT_RESUME_MAX caps one replay: reconnect at once from the new head.
        return bool(history) and (self.last_id or 0) < head

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("%s: undecodable frame dropped", self.url)
            return
        kind = frame.get("type")
        if kind == "chat.message":
            self._accept(frame)
        elif kind == "chat.ack":
            cid, mid = frame.get("client_msg_id"), frame.get("id")
            if isinstance(cid, str) and isinstance(mid, int):
                self.acks[cid] = mid
                waiter = self._waiters.get(cid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(mid)
        elif kind == "chat.error":
            self.errors.append(frame)
            if self._error_fut is not None and not self._error_fut.done():
                self._error_fut.set_result(frame)
        async with self._changed:
            self._changed.notify_all()

    def _accept(self, msg: dict) -> None:
        mid = int(msg["id"])
        if mid in self.messages or mid <= (self.last_id or 0):
            self.duplicates += 1
            return
        self.messages[mid] = msg if self.keep_messages else None
        self.sequence.append(mid)
        if mid != (self.last_id or 0) + 1:
            self.out_of_order += 1
        self.max_id = max(self.max_id, mid)
        while (self.last_id or 0) + 1 in self.messages:
            self.last_id = (self.last_id or 0) + 1
        waiter = self._waiters.get(msg.get("message"))
        if waiter is not None and not waiter.done():
            waiter.set_result(mid)
        if self._catching_up is not None and self.last_id >= (self._catching_up.head_at_reopen or 0):
            self._catching_up.caught_up_at = time.monotonic()
            self._catching_up = None
        if self.on_message is not None:
            self.on_message(msg)
