"""The worker's server: daphne's, read as startup → main loop → shutdown.

- startup (`_startup`, once the reactor runs): our WebSocket protocol and its
  shared options, SIGTERM/SIGINT handlers, slow-client shedding, the open-file
  limit (wsworker.fdlimit), the Redis
  channel-layer watcher, the fleet census (admission, rebalancing), GC tuning,
  the metrics port and event-loop lag watch, the event-loop stall watchdog;
- main loop: daphne's reactor; each connection gets an Inbox and, for a
  WebSocket, the frames extension in its scope (`create_application`); the
  once-a-second reaper looks only at connections that ended (`application_checker`);
  the two-second sweep (timeouts, keepalive pings) checks open sockets inline
  (`timeout_checker`); both run on the tick of the worker's other chores
  (wsworker.ticks: an idle worker wakes once a second, not seven times);
- shutdown (`_on_signal`): the drain (wsworker.drain), then stop. A second
  signal stops at once.

`python -m wsworker [daphne args] project.asgi:application` runs it
(wsworker.__main__ picks the event loop before this module is imported).
"""
import asyncio
import logging
import signal
import sys
import time
from concurrent.futures import CancelledError
from functools import partial

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import reactor

from . import access, census, conf, drain, fdlimit, gctune, layerwatch, metrics, shedding, ticks, watchdog
from .frames import SCOPE_FRAMES, frame_text
from .inbox import Inbox
from .protocol import CLOSE_RESTART, WorkerWebSocketProtocol, share_protocol_options

logger = logging.getLogger(__name__)


MAX_AGE_SPREAD = 0.1  # sockets leave in the last tenth of --websocket_timeout (WS_MAX_AGE_SECONDS)


def _spread(protocol, max_age: float) -> float:
    """How much sooner than max_age this socket leaves: a fixed share of the last tenth,
    from the object's address, so sockets opened together leave over that tenth, not at once."""
    return (id(protocol) >> 4) % 1024 / 1024 * MAX_AGE_SPREAD * max_age


class WorkerServer(Server):
    def __init__(self, *args, **kwargs):
        # Our own handlers replace Twisted's (which would stop the reactor at once).
        kwargs["signal_handlers"] = False
        # daphne's access log to stdout goes through logging instead (wsworker.access);
        # a file named with --access-log keeps daphne's lines.
        if getattr(kwargs.get("action_logger"), "stream", None) is sys.stdout:
            kwargs["action_logger"] = access.log_action
        super().__init__(*args, **kwargs)
        self._drain_task = None
        self._fatal = None  # why startup gave up: the process then exits non-zero
        self._to_reap: set = set()  # connections application_checker must look at

    def run(self):
        reactor.callWhenRunning(self._startup)
        super().run()
        if self._fatal:
            raise SystemExit(self._fatal)

    # ------------------------------------------------------------- startup
    def _startup(self):
        # Runs once the reactor is up, i.e. after run() built the factory.
        self.ws_factory.protocol = WorkerWebSocketProtocol
        # autobahn's default drops the TCP connection on a protocol violation such as
        # an oversized frame; send a proper close (1009) so clients learn why.
        # (setProtocolOptions resets allowNullOrigin to False unless given: keep daphne's
        # True so `Origin: null` reaches the app's origin check, not an HTTP 400.)
        self.ws_factory.setProtocolOptions(failByDrop=False, allowNullOrigin=True)
        share_protocol_options(self.ws_factory, self.ws_factory.protocol)
        access.drop_twisted_access_log(self.http_factory)  # daphne's lines go through access.log_action
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        shedding.start(self)
        # A socket is a file descriptor: the soft limit goes up to the hard one, and
        # admission caps the worker at what fits (logged with the setting's name).
        fdlimit.apply(int(conf.get("WS_MAX_SOCKETS")))
        # The Redis watcher belongs to the worker process (not to every ASGI host,
        # e.g. tests), and must start once the loop runs.
        loop.call_soon(layerwatch.ensure_started)
        # The fleet census (Redis): admission's balance rule and rebalancing after a scale-out.
        loop.call_soon(census.ensure_started)
        gctune.tune()
        self._start_metrics()
        watchdog.start(loop, conf.get("WS_LOOP_STALL_SECONDS"))

    def _start_metrics(self):
        port = int(conf.get("WS_METRICS_PORT") or 0)
        if port:
            # A busy port must stop the worker with the setting's name, not leave it unscraped.
            try:
                metrics.serve(port, conf.get("BIND_HOST"))
            except Exception as exc:
                self._fatal = f"metrics: cannot listen on WS_METRICS_PORT={port}: {exc}"
                logger.critical("%s", self._fatal)
                self.stop()
                return
        metrics.start_loop_watch()

    # ----------------------------------------------------------- main loop
    def create_application(self, protocol, scope):
        """daphne's create_application, with a lighter queue and the frames extension.

        Same steps as daphne 4's: one application instance per connection, run as
        a task, fed through the returned queue (here an Inbox).
        """
        assert "application_instance" not in self.connections[protocol]
        inbox = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        if isinstance(protocol, WorkerWebSocketProtocol):
            scope[SCOPE_FRAMES] = (frame_text, protocol.send_frames)
        application_instance = self.application(
            scope=scope,
            receive=inbox.get,
            send=partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        task = self.connections[protocol]["application_instance"] = asyncio.ensure_future(application_instance)
        task.add_done_callback(lambda _task: self._to_reap.add(protocol))
        return inbox

    def protocol_disconnected(self, protocol):
        super().protocol_disconnected(protocol)
        self._to_reap.add(protocol)

    def application_checker(self):
        """daphne's once-a-second reaper, run on the connections that need it only, on the worker's tick.

        daphne walks EVERY connection each second to find application instances
        that finished and connections that went away (and cancels an application
        that outlives its disconnect by application_close_timeout). With thousands
        of sockets per worker that walk is a steady cost and a pause each second.
        Here only connections whose application finished or which disconnected
        (both signalled) are looked at, with daphne 4's steps (`_reap`); one still
        waiting for its application to finish after a disconnect stays on the list.
        daphne reschedules its checker 1 s after each run, on a phase of its own;
        this one runs on the tick of the worker's other chores (wsworker.ticks).
        """
        # Next run first: an error reaping one connection must not end the reaper for all.
        reactor.callLater(ticks.delay(1.0), self.application_checker)
        looked_at, self._to_reap = self._to_reap, set()
        for protocol in looked_at:
            details = self.connections.get(protocol)
            try:
                if details is not None and self._reap(protocol, details):
                    self._to_reap.add(protocol)  # its application has not finished yet: look again
            except Exception:
                logger.exception("reaping a finished connection failed; it is dropped from the reaper")

    def _reap(self, protocol, details) -> bool:
        """daphne 4's Server.application_checker, for one connection; True while it
        is disconnected and its application has not finished."""
        disconnected = details.get("disconnected")
        instance = details.get("application_instance")
        if disconnected and time.time() - disconnected > self.application_close_timeout:
            if instance and not instance.done():
                logger.warning("Application instance %r for connection %s took too long to shut down and was killed.",
                               instance, repr(protocol))
                instance.cancel()
        if instance and instance.done():
            try:
                exception = instance.exception()
            except (CancelledError, asyncio.CancelledError):
                pass  # cancelled: nothing to report
            else:
                if exception:
                    if isinstance(exception, KeyboardInterrupt):
                        self.stop()  # the application asks the server to exit (tests)
                    else:
                        logger.error("Exception inside application: %s", exception, exc_info=exception)
                        if not disconnected:
                            protocol.handle_exception(exception)
            del details["application_instance"]
            instance = None
        if not instance and disconnected:
            del self.connections[protocol]
            return False
        return bool(disconnected)

    def timeout_checker(self):
        """daphne's sweep every 2 s, with the check of an open WebSocket inlined.

        daphne calls every connection's check_timeouts(): for an open socket two
        clock reads, duration() and the same two comparisons, to close it past
        --websocket_timeout and to ping it once idle for --ping-interval. With
        thousands of mostly idle sockets, that sweep and the pings are most of
        what a worker does. Open sockets of ours get the same two checks here, in
        the same order, with one clock read per sweep; every other connection (a
        handshake, a closing socket, HTTP) gets daphne's own check_timeouts().
        Past its age (WS_MAX_AGE_SECONDS; services/bin/ws passes -1 for none) a
        socket is closed with 1012, not daphne's 1000, so the client reconnects at
        once and resumes, and each leaves at its own point of the age's last tenth
        (_spread): sockets opened together do not reconnect together.
        """
        # Next run first, as the reaper: nothing in this sweep can end the sweeps.
        reactor.callLater(ticks.delay(2.0), self.timeout_checker)  # on the worker's tick (wsworker.ticks)
        now = time.time()
        max_age, ping_interval = self.websocket_timeout, self.ping_interval
        # No age limit (-1, the default): no per-socket deadline to compute. With 10,000
        # sockets a sweep took 2.3 ms with it and 0.7 ms without (every 2 s, per worker).
        aging = max_age >= 0
        aged = 0
        open_state = WorkerWebSocketProtocol.STATE_OPEN
        for protocol in list(self.connections):
            try:
                if type(protocol) is not WorkerWebSocketProtocol or protocol.state != open_state:
                    protocol.check_timeouts()
                elif aging and max_age - _spread(protocol, max_age) < now - protocol.socket_opened:
                    protocol.serverClose(code=CLOSE_RESTART)  # reconnect at once, resume
                    aged += 1
                elif now - protocol.last_ping > ping_interval:
                    protocol._sendAutoPing()
                    protocol.last_ping = now
            except Exception:
                logger.exception("timeout check of a connection failed; the sweep goes on")
        if aged:
            logger.info("max age: closed %d socket(s) open longer than WS_MAX_AGE_SECONDS=%g with %d",
                        aged, max_age, CLOSE_RESTART)

    # ------------------------------------------------------------ shutdown
    def _on_signal(self, sig):
        if self._drain_task is not None:
            logger.warning("drain: second %s, stopping now", signal.Signals(sig).name)
            self.stop()
            return
        logger.info("drain: %s received", signal.Signals(sig).name)
        self._drain_task = asyncio.ensure_future(drain.drain(self))


class WorkerCommandLineInterface(CommandLineInterface):
    server_class = WorkerServer
