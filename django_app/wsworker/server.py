"""`python -m chat.wsserver [daphne args] config.asgi:application`: daphne with a drain.

Stock daphne stops the reactor on SIGTERM and cancels every application, so
clients see an abnormal close (1006) and cannot tell a deploy from a crash.
This wrapper drains instead: mark the worker draining (/readyz → 503, new
handshakes closed with 1012), close every live socket with 1012 ("restarting,
reconnect now"), wait until they have left their groups or WS_DRAIN_SECONDS
passes, then stop. Clients reconnect to another worker and resume with ?after=.
"""
import asyncio
import gc
import logging
import os
import signal
import time
from functools import partial


def _choose_event_loop():
    """uvloop unless WS_EVENT_LOOP=asyncio; must run before daphne.server is imported,
    because that import creates the loop Twisted's reactor runs on."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings

    if settings.WS_EVENT_LOOP == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


_choose_event_loop()

from daphne.cli import CommandLineInterface  # noqa: E402  (after the loop policy)
from daphne.server import Server  # noqa: E402
from daphne.ws_protocol import WebSocketProtocol  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.web.http import HTTPChannel  # noqa: E402

from chat.protocol import SCOPE_FRAMES  # noqa: E402
from chat.wsio import Inbox, frame_text  # noqa: E402

logger = logging.getLogger("chat.wsserver")

POLL_SECONDS = 0.05
SHED_CHECK_SECONDS = 1.0
SHED_GRACE_SECONDS = 2.0


def unsent_bytes(transport) -> int:
    """Bytes handed to a Twisted TCP transport that the kernel has not taken yet.

    Grows without bound when a client stops reading: the app's sends never block,
    so this buffer is where a stuck client would pile up the room's traffic.
    """
    data = getattr(transport, "dataBuffer", b"")
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


class ChatWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket protocol, plus: server close codes (serverClose), pre-built
    frames for the room fan-out (send_frames), and no HTTPChannel kept per socket."""

    SERVER_CODES = frozenset({1011, 1012, 1013})

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

    def send_frames(self, data: bytes) -> bool:
        """Write frames built by frame_text(); False if this socket needs the ASGI path.

        The room fan-out (chat.fanout) frames a message once per worker and hands
        every socket the same bytes: no ASGI send, no per-socket framing. Only an
        uncompressed connection can take pre-built frames (the server never
        negotiates compression, but a subclass could). Writes straight to the
        transport like autobahn's sendData, without the debug line it formats on
        every call; behind anything autobahn has queued, so order is kept.
        """
        if self._perMessageCompress is not None:
            return False
        if self.state == self.STATE_OPEN:
            if self.send_queue:
                self.sendData(data)
            else:
                self.transport.write(data)
                self.trafficStats.outgoingOctetsWireLevel += len(data)
        return True


class DrainingServer(Server):
    def __init__(self, *args, **kwargs):
        # Our own handlers replace Twisted's (which would stop the reactor at once).
        kwargs["signal_handlers"] = False
        super().__init__(*args, **kwargs)
        self._drain_task = None

    def run(self):
        reactor.callWhenRunning(self._install_signal_handlers)
        super().run()

    def _install_signal_handlers(self):
        # Runs once the reactor is up, i.e. after run() built the factory.
        self.ws_factory.protocol = ChatWebSocketProtocol
        # autobahn's default drops the TCP connection on a protocol violation such as
        # an oversized frame; send a proper close (1009) so clients learn why.
        # (setProtocolOptions resets allowNullOrigin to False unless given: keep daphne's
        # True so `Origin: null` reaches our origin check and gets a 4403, not an HTTP 400.)
        self.ws_factory.setProtocolOptions(failByDrop=False, allowNullOrigin=True)
        self._share_protocol_options()
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        reactor.callLater(SHED_CHECK_SECONDS, self._shed_slow_clients)
        # The Redis-restart watcher belongs to the worker process (not to every ASGI
        # host, e.g. tests), and must start once the loop runs.
        from chat import layerwatch

        loop.call_soon(layerwatch.ensure_started)
        self._tune_gc()

    @staticmethod
    def _tune_gc():
        """Keep the cyclic GC off the long-lived heap a worker builds up.

        Every socket holds a few hundred container objects for as long as it is
        open, so with thousands of sockets each full collection walks them all,
        and CPython's default gen-0 threshold (700 allocations) starts
        collections many times per connect. gc.freeze() moves what exists at
        startup (Django, the app, the libraries) out of the GC's reach;
        WS_GC_THRESHOLD spaces collections out. Cycles are still collected.
        Measured: connects/s +30-50 % in a reconnect storm (docs/benchmarks.md).
        """
        from django.conf import settings

        gc.collect()
        gc.freeze()
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.WS_GC_THRESHOLD, gen1, gen2)

    def _share_protocol_options(self):
        """Hold autobahn's per-connection options once, on the protocol class.

        autobahn copies each of its ~30 CONFIG_ATTRS from the factory into every
        connection's __dict__ unless the protocol already has the attribute (its
        documented way to configure a protocol class). All our connections share
        one configuration, so setting them on the class saves ~2 KiB per socket.
        Callables are wrapped so they stay plain functions, not bound methods.
        """
        proto = self.ws_factory.protocol
        for attr in proto.CONFIG_ATTRS:
            value = getattr(self.ws_factory, attr)
            setattr(proto, attr, staticmethod(value) if callable(value) else value)
        # Nothing left to copy per connection; autobahn would still pretty-print the
        # whole list for a debug line on every connect (9-15 % of a handshake's CPU).
        proto.CONFIG_ATTRS = ()

    def create_application(self, protocol, scope):
        """daphne's create_application, with a lighter queue and the frames extension.

        Same steps as daphne 4's: one application instance per connection, run as
        a task, fed through the returned queue (here an Inbox).
        """
        assert "application_instance" not in self.connections[protocol]
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        if isinstance(protocol, ChatWebSocketProtocol):
            scope[SCOPE_FRAMES] = (frame_text, protocol.send_frames)
        application_instance = self.application(
            scope=scope,
            receive=inbox.get,
            send=partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance)
        return inbox

    def _shed_slow_clients(self):
        """Close sockets whose unsent backlog exceeds WS_MAX_SEND_BUFFER_BYTES.

        A slow or stuck client must neither grow this worker's memory without bound
        nor slow its room down: it gets close 1013 (try again later; it resumes with
        ?after= and loses nothing) and, if it does not even read that, the TCP
        connection is aborted. Each shed is logged and counted on /healthz.
        """
        from django.conf import settings

        from chat import protocol, registry

        limit = settings.WS_MAX_SEND_BUFFER_BYTES
        try:
            for proto in list(self.connections):
                if not isinstance(proto, WebSocketProtocol) or getattr(proto, "chat_shed", False):
                    continue
                backlog = unsent_bytes(proto.transport)
                if backlog <= limit:
                    continue
                proto.chat_shed = True
                registry.refusals[f"close {protocol.CLOSE_OVERLOADED} slow consumer"] += 1
                logger.warning(
                    "shed slow client %s: %d bytes unsent > WS_MAX_SEND_BUFFER_BYTES=%d, closing %d",
                    getattr(proto, "client_addr", "?"), backlog, limit, protocol.CLOSE_OVERLOADED,
                )
                proto.serverClose(code=protocol.CLOSE_OVERLOADED)
                reactor.callLater(SHED_GRACE_SECONDS, proto.transport.abortConnection)
        except Exception:
            logger.exception("slow-client check failed")
        reactor.callLater(SHED_CHECK_SECONDS, self._shed_slow_clients)

    def _on_signal(self, sig):
        if self._drain_task is not None:
            logger.warning("drain: second %s, stopping now", signal.Signals(sig).name)
            self.stop()
            return
        logger.info("drain: %s received", signal.Signals(sig).name)
        self._drain_task = asyncio.ensure_future(self.drain())

    async def drain(self):
        from django.conf import settings

        from chat import protocol, registry, writer

        try:
            registry.state.draining = True
            consumers = list(registry.live)
            logger.info("drain: closing %d socket(s) with %d", len(consumers), protocol.CLOSE_RESTART)
            await registry.close_sockets(consumers, protocol.CLOSE_RESTART, logger)
            deadline = time.monotonic() + settings.WS_DRAIN_SECONDS
            while registry.count() and time.monotonic() < deadline:
                await asyncio.sleep(POLL_SECONDS)
            left = registry.count()
            if left:
                logger.warning("drain: %d socket(s) still open after %ss", left, settings.WS_DRAIN_SECONDS)
            else:
                logger.info("drain: every socket closed and left its group")
            # Messages accepted before the close are stored and published before we stop.
            if not await writer.writes_done(max(0.5, deadline - time.monotonic())):
                logger.warning("drain: messages still being stored after %ss", settings.WS_DRAIN_SECONDS)
        except Exception:
            logger.exception("drain failed")
        finally:
            logger.info("drain: stopping the server")
            self.stop()


class DrainingCommandLineInterface(CommandLineInterface):
    server_class = DrainingServer


if __name__ == "__main__":
    DrainingCommandLineInterface.entrypoint()
