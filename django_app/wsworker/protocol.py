"""One WebSocket connection: daphne's protocol with the additions a worker needs.

- server close codes 1011/1012/1013 (drain, overload), which autobahn refuses;
- send_frames: pre-built frames written straight to the transport (wsworker.frames);
- no HTTPChannel kept alive per socket (memory);
- autobahn's per-connection options held once on the class (memory, connect CPU);
- handshakes, closes and bytes written counted for wsworker.metrics (plain ints);
- no debug line formatted for every read (dataReceived);
- the handshake's headers and bytes let go of once the socket is open (memory).
- admission control: a handshake wsworker.admission refuses gets HTTP 503 with
  Retry-After before the upgrade (nginx retries the next worker).

Every autobahn/daphne/Twisted internal the runtime touches is named in
PRIVATE_INTERNALS below; tests/unit/test_wsworker_internals.py fails when an
upgrade removes one.
"""
import asyncio

from autobahn.websocket.types import ConnectionDeny
from daphne.ws_protocol import WebSocketProtocol
from twisted.web.http import HTTPChannel

from . import admission, metrics
from .reading import pong_payload, split_text_frames

# Library internals this package relies on, each (class, attribute): an
# attribute of the class, or one its methods set on `self`. Pinned by
# tests/unit/test_wsworker_internals.py, which fails when an upgrade drops one.
PRIVATE_INTERNALS = (
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "_perMessageCompress"),  # send_frames
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "send_queue"),  # send_frames, sendData
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "trafficStats"),  # send_frames, sendData
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "logOctets"),  # sendData, dataReceived
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "sendCloseFrame"),  # serverClose
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "CONFIG_ATTRS"),  # share_protocol_options
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "closedByMe"),  # onClose (metrics)
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "localCloseCode"),  # onClose (metrics)
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "_dataReceived"),  # dataReceived
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "data"),  # dataReceived: bytes buffered
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "current_frame"),  # dataReceived
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "inside_message"),  # dataReceived
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "autoPingTimeoutCall"),  # _took_text_frames
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "_cancelAutoPingTimeoutCall"),  # _took_text_frames
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "autoPingPending"),  # _took_pong
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "autoPingPendingSent"),  # _took_pong
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "autoPingInterval"),  # _took_pong
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "http_request_data"),  # _release_handshake
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "http_response_data"),  # _release_handshake
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "http_headers"),  # _release_handshake
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "http_request_params"),  # _release_handshake
    ("daphne.ws_protocol.WebSocketProtocol", "request"),  # _release_handshake (only .path is read later)
    ("twisted.internet.abstract.FileDescriptor", "dataBuffer"),  # unsent_bytes
    ("twisted.internet.abstract.FileDescriptor", "offset"),  # unsent_bytes
    ("twisted.internet.abstract.FileDescriptor", "_tempDataLen"),  # unsent_bytes
    ("twisted.internet.abstract.FileDescriptor", "producer"),  # _detach_http_channel
    ("twisted.internet.abstract.FileDescriptor", "_writeDisconnected"),  # write_soon
    ("twisted.internet.abstract.FileDescriptor", "_tempDataBuffer"),  # write_soon
    ("twisted.internet.tcp.Connection", "TLS"),  # write_soon
    ("twisted.internet.tcp.Connection", "socket"),  # _flush
    ("twisted.internet.tcp.Connection", "protocol"),  # shedding (a writer's protocol)
    ("daphne.server.Server", "connections"),  # drain, application_checker, timeout_checker
    ("daphne.server.Server", "application_checker"),  # wsworker.server (run() schedules it; ours, on the tick)
    ("daphne.server.Server", "application_close_timeout"),  # WorkerServer._reap (daphne 4's checker steps)
    ("daphne.server.Server", "http_factory"),  # _startup: drop_twisted_access_log
    ("daphne.server.Server", "timeout_checker"),  # wsworker.server
    ("daphne.server.Server", "websocket_timeout"),  # WorkerServer.timeout_checker
    ("daphne.server.Server", "ping_interval"),  # WorkerServer.timeout_checker
    ("daphne.ws_protocol.WebSocketProtocol", "socket_opened"),  # WorkerServer.timeout_checker
    ("daphne.ws_protocol.WebSocketProtocol", "last_ping"),  # WorkerServer.timeout_checker
    ("autobahn.websocket.protocol.WebSocketServerProtocol", "_sendAutoPing"),  # WorkerServer.timeout_checker
    ("daphne.server.Server", "protocol_disconnected"),  # wsworker.server
    ("daphne.server.Server", "handle_reply"),  # create_application
    ("daphne.server.Server", "create_application"),  # wsworker.server
    ("daphne.server.Server", "ws_factory"),  # wsworker.server
    ("daphne.ws_protocol.WebSocketProtocol", "server"),  # onClose: set by onConnect (admission count)
)


# IANA-registered server close codes clients act on.
CLOSE_INTERNAL_ERROR = 1011
CLOSE_RESTART = 1012  # the worker is restarting: reconnect now, resume
CLOSE_OVERLOADED = 1013  # try again later, with backoff

PING_FIRST_BYTE = b"\x89"  # FIN + opcode 9: how every unfragmented ping frame starts


def unsent_bytes(transport) -> int:
    """Bytes handed to a Twisted TCP transport that the kernel has not taken yet.

    Grows without bound when a client stops reading: the app's sends never block,
    so this buffer is where a stuck client would pile up the room's traffic.
    """
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


_queued: list = []  # transports holding frames the next flush sends (write_soon)


def write_soon(transport, data: bytes) -> None:
    """transport.write(data), sent by one flush per event-loop pass for all sockets.

    Twisted's write() buffers, registers the socket for writability and sends
    on the reactor's next pass: per socket an epoll registration, a wake-up, a
    send and a deregistration, each through the reactor's callback wrappers.
    With many small rooms nearly every delivery is a write to an idle socket,
    and that round costs more than the send itself. Here the frames go into
    Twisted's own buffer (so they stay in order with anything autobahn writes)
    and ONE callback, scheduled once per loop pass, sends every socket's
    buffer with one send() each: several runs written to a socket in the same
    pass still leave in one send, as before. Only what the kernel does not
    take (a slow reader) waits for writability the usual way; a closing, TLS or
    already-backlogged transport takes Twisted's path unchanged.
    """
    if transport in _queued_set:
        transport._tempDataBuffer.append(data)
        transport._tempDataLen += len(data)
        return
    if (not transport.connected or transport.disconnecting or transport._writeDisconnected
            or getattr(transport, "TLS", True)
            or len(transport.dataBuffer) != transport.offset or transport._tempDataLen):
        transport.write(data)
        return
    transport._tempDataBuffer.append(data)
    transport._tempDataLen += len(data)
    _queued_set.add(transport)
    _queued.append(transport)
    if len(_queued) == 1:
        asyncio.get_event_loop().call_soon(_flush)


_queued_set: set = set()


def _flush() -> None:
    """Send what write_soon queued: one send() per socket, straight on its socket.

    Twisted's doWrite would do the same send through four more calls per socket
    (its buffer shuffle, writeSomeData, a memoryview slice, stopWriting for a
    registration that never happened): in small rooms nearly every delivery is
    one such socket (G200x15: +4 % deliveries per CPU-second, docs/benchmarks.md).
    Anything but a plain success goes back to Twisted: what the kernel did not
    take waits in its buffer for writability, and a send() error (a client that
    vanished) is left for doWrite to report as the connection's loss.
    """
    batch = _queued[:]
    _queued.clear()
    _queued_set.clear()
    for transport in batch:
        pending = transport._tempDataBuffer
        if not transport.connected or not pending:
            continue
        if transport.disconnecting or len(transport.dataBuffer) != transport.offset:
            _twisted_write(transport)  # closing, or Twisted's own buffer goes first
            continue
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            sent = transport.socket.send(data)
        except OSError:
            _twisted_write(transport)  # EAGAIN or a lost connection: Twisted decides
            continue
        transport._tempDataBuffer = []
        transport._tempDataLen = 0
        if sent != len(data):
            transport.dataBuffer, transport.offset = data, sent
            transport.startWriting()


def _twisted_write(transport) -> None:
    """Twisted's own write of the buffered bytes; what is left waits for writability."""
    if transport.doWrite() is not None or unsent_bytes(transport):
        transport.startWriting()


class WorkerWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket protocol, plus: server close codes (serverClose), pre-built
    frames (send_frames), and no HTTPChannel kept per socket."""

    SERVER_CODES = frozenset({CLOSE_INTERNAL_ERROR, CLOSE_RESTART, CLOSE_OVERLOADED})
    wsworker_refused = False  # refused at the handshake: daphne never saw it (rare: set per refusal only)

    def onConnect(self, request):
        """Admission first: a refused handshake never reaches daphne or the app.

        autobahn answers ConnectionDeny with an HTTP error response instead of
        101 (failHandshake below adds Retry-After), then drops the connection.
        """
        reason = admission.admit(self)
        if reason is not None:
            self.wsworker_refused = True
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, f"Service Unavailable ({reason})")
        # Admitted: counted until onClose. No flag of our own per socket (memory);
        # daphne's onConnect sets self.server first thing, which onClose checks.
        return super().onConnect(request)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        if code == ConnectionDeny.SERVICE_UNAVAILABLE:
            responseHeaders = [*(responseHeaders or ()), ("Retry-After", str(admission.RETRY_AFTER_SECONDS)),
                               ("Content-Length", "0"), ("Connection", "close")]
        super().failHandshake(reason, code, responseHeaders)

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the client: simple text frames read here (wsworker.reading), the
        rest by autobahn's parser, in order.

        autobahn's own dataReceived would also format a debug line (method name and
        peer, in colour) for every read, logged or not: about a fifth of reading a
        small frame. The fast path runs only between frames of an open socket with
        nothing buffered and no frame logging; whatever it does not take (a partial
        or any other frame) goes to autobahn exactly as it arrived.
        """
        if (self.state == self.STATE_OPEN and not self.data and self.current_frame is None
                and not self.inside_message and not self.logFrames and not self.logOctets):
            if data[0] == 0x8A and self._took_pong(data):
                return
            texts, used = split_text_frames(data, self.READ_LIMIT)
            if used:
                self._took_text_frames(texts, used)
                if used == len(data):
                    return
                data = data[used:]
        self._dataReceived(data)

    # Frames larger than daphne's limits (WS_MAX_MESSAGE_BYTES) go to autobahn, which
    # closes with 1009; set from the factory's options by share_protocol_options.
    READ_LIMIT = 0

    def _took_text_frames(self, texts, used: int) -> None:
        """What autobahn does for each whole text frame it reads: traffic counters, a
        pending auto-ping timeout cancelled by traffic, then daphne's onMessage."""
        stats = self.trafficStats
        stats.incomingOctetsWireLevel += used
        payload = sum(map(len, texts))
        stats.incomingOctetsWebSocketLevel += payload
        stats.incomingOctetsAppLevel += payload
        stats.incomingWebSocketFrames += len(texts)
        stats.incomingWebSocketMessages += len(texts)
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        for text in texts:
            self.onMessage(text, False)
            if self.state != self.STATE_OPEN:
                return

    def _took_pong(self, data: bytes) -> bool:
        """What autobahn does with the answer to its own keepalive ping (the
        frame an idle socket sends, one per WS_PING_INTERVAL): traffic counters,
        the ping's timeout cancelled, nothing pending. Its hooks for a pong
        (onAutoPong, onPong) are no-ops that daphne does not override. False
        (autobahn reads it) for anything else: a partial or unsolicited pong,
        or one that does not echo the pending ping."""
        payload = pong_payload(data)
        if (payload is None or not self.autoPingPending or payload != self.autoPingPending
                or self.autoPingInterval):
            return False
        stats = self.trafficStats
        stats.incomingOctetsWireLevel += len(data)
        stats.incomingOctetsWebSocketLevel += len(payload)
        stats.incomingWebSocketFrames += 1
        if self.autoPingTimeoutCall:
            self.autoPingTimeoutCall.cancel()
        self.autoPingPending = self.autoPingPendingSent = self.autoPingTimeoutCall = None
        return True

    # Set by autobahn's server handshake (processHandshake, succeedHandshake) and read
    # by nothing once the socket is open.
    HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_headers", "http_request_params")

    def onOpen(self):
        admission.opened(self)
        super().onOpen()
        self._release_handshake()

    def _release_handshake(self):
        """Let go of what the handshake left on the connection (~2.5 KiB per socket).

        autobahn keeps the raw request and response bytes and the parsed headers and
        query, and daphne keeps autobahn's ConnectionRequest holding the same dicts,
        all for the life of the socket, though only the handshake reads them (daphne
        still logs `request.path` on close, so the request itself stays). The app's
        scope keeps its own copy of the headers: nothing it sees changes.
        """
        for name in self.HANDSHAKE_LEFTOVERS:
            if name in self.__dict__:
                self.__dict__[name] = None
        request = self.__dict__.get("request")
        if request is not None:
            request.headers, request.params = {}, {}

    def connectionMade(self):
        super().connectionMade()
        self._detach_http_channel()

    def _detach_http_channel(self):
        """Let go of the HTTP connection object this socket was upgraded from.

        daphne hands the TCP transport over to us but leaves Twisted's HTTPChannel
        registered on it as its producer, so the channel, its upgrade request and
        headers live as long as the socket (~2.5 KiB each). (The channel's idle
        timer is already off: Twisted suspends it while a request is in progress,
        and the upgrade request never finishes; setTimeout(None) just makes sure.)
        """
        channel = getattr(self.transport, "producer", None)
        if isinstance(channel, HTTPChannel):
            channel.setTimeout(None)
            self.transport.unregisterProducer()

    def serverAccept(self, subprotocol=None):
        metrics.handshakes["accepted"] += 1
        super().serverAccept(subprotocol)

    def serverReject(self):
        metrics.handshakes["rejected"] += 1
        super().serverReject()

    def onClose(self, wasClean, code, reason):
        if self.wsworker_refused:
            return  # daphne's onClose expects a connection it registered
        if "server" in self.__dict__:  # onConnect admitted it (autobahn calls onClose once)
            admission.released(self)
        # Our own close code when we closed (the client's echo may never come).
        if getattr(self, "closedByMe", False) and getattr(self, "localCloseCode", None):
            metrics.closes[("server", self.localCloseCode)] += 1
        else:
            metrics.closes[("client", code)] += 1
        super().onClose(wasClean, code, reason)

    def serverClose(self, code=None):
        """Lets the app close with 1011/1012/1013.

        Autobahn's sendClose() only accepts 1000 and 3000-4999, yet 1012 (service
        restart) and 1013 (try again later) are IANA-registered codes that clients
        act on (reconnect now / back off). The frame itself is valid per RFC 6455.
        """
        if code in self.SERVER_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """A keepalive ping (one 0x89 frame autobahn built) on an open socket goes
        through write_soon, without the debug line autobahn formats for every call,
        logged or not (the method's name and the peer, in colour: half a ping's
        cost), and without a writability registration of its own.

        Only pings: close frames, pongs and handshake answers stay autobahn's,
        written at once. A first version sent everything autobahn writes through
        write_soon; in the full fault suite it left sockets counted as open after
        the soak and a mass disconnect (cause not found; autobahn often drops the
        connection right after a close frame or a refused handshake's answer, while
        nothing follows a ping).
        """
        if (data[:1] != PING_FIRST_BYTE or sync or chopsize or self.send_queue or self.logOctets
                or self.state != self.STATE_OPEN):
            super().sendData(data, sync, chopsize)
            return
        write_soon(self.transport, data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)

    def send_frames(self, data: bytes) -> bool:
        """Write frames built by frame_text(); False if this socket needs the ASGI path.

        Only an uncompressed connection can take pre-built frames (the server never
        negotiates compression, but a subclass could). Writes straight to the
        transport like autobahn's sendData, without the debug line it formats on
        every call, sent by one flush per loop pass (write_soon);
        behind anything autobahn or Twisted has queued, so order is kept.
        """
        if self._perMessageCompress is not None:
            return False
        if self.state == self.STATE_OPEN:
            if self.send_queue:
                self.sendData(data)
            else:
                write_soon(self.transport, data)
                self.trafficStats.outgoingOctetsWireLevel += len(data)
            metrics.written_bytes["framed"] += len(data)
        return True


def share_protocol_options(factory, proto) -> None:
    """Hold autobahn's per-connection options once, on the protocol class.

    autobahn copies each of its ~30 CONFIG_ATTRS from the factory into every
    connection's __dict__ unless the protocol already has the attribute (its
    documented way to configure a protocol class). All our connections share
    one configuration, so setting them on the class saves ~2 KiB per socket.
    Callables are wrapped so they stay plain functions, not bound methods.
    """
    for attr in proto.CONFIG_ATTRS:
        value = getattr(factory, attr)
        setattr(proto, attr, staticmethod(value) if callable(value) else value)
    limits = [n for n in (factory.maxMessagePayloadSize, factory.maxFramePayloadSize) if n > 0]
    proto.READ_LIMIT = min(limits) if limits else 0
    # Nothing left to copy per connection; autobahn would still pretty-print the
    # whole list for a debug line on every connect (9-15 % of a handshake's CPU).
    proto.CONFIG_ATTRS = ()
