"""The SIGTERM drain: close every socket with 1012, let the app finish, then stop.

Stock daphne stops the reactor on SIGTERM and cancels every application, so
clients see an abnormal close (1006) and cannot tell a deploy from a crash.
Here the worker is marked draining (/readyz → 503, the app refuses new
sockets), every socket is closed with 1012 ("restarting, reconnect now"), the
drain waits until they have gone or WS_DRAIN_SECONDS passes, lets the app
finish what they handed over (wsworker.hooks.on_drain), and stops. Clients
reconnect to another worker and resume. The worker leaves the fleet census
first (wsworker.census), so no other worker moves sockets its way.
"""
import asyncio
import logging
import time

from daphne.ws_protocol import WebSocketProtocol

from . import census, conf, hooks, registry
from .protocol import CLOSE_RESTART

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05


def open_websockets(server) -> list:
    """WebSocket connections of this server that are neither closed nor closing."""
    return [
        proto for proto, info in list(server.connections.items())
        if isinstance(proto, WebSocketProtocol) and "disconnected" not in info
        and proto.state == proto.STATE_OPEN
    ]


def _close_unregistered(server) -> int:
    """Sockets the app never put in registry.live get the same 1012, from the protocol."""
    found = open_websockets(server)
    for proto in found:
        proto.serverClose(code=CLOSE_RESTART)
    return len(found)


async def drain(server) -> None:
    seconds = conf.get("WS_DRAIN_SECONDS")
    try:
        registry.state.draining = True
        await census.withdraw()  # other workers stop counting on this one at once
        consumers = list(registry.live)
        logger.info("drain: closing %d socket(s) with %d", len(consumers), CLOSE_RESTART)
        await registry.close_sockets(consumers, CLOSE_RESTART, logger)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not registry.count() and not _close_unregistered(server):
                break
            await asyncio.sleep(POLL_SECONDS)
        left = registry.count()
        if left:
            logger.warning("drain: %d socket(s) still open after %ss", left, seconds)
        else:
            logger.info("drain: every socket closed and left its group")
        # Work the app accepted before the close (messages being stored) finishes first.
        if not await hooks.run_drain(max(0.5, deadline - time.monotonic())):
            logger.warning("drain: messages still being stored after %ss", seconds)
    except Exception:
        logger.exception("drain failed")
    finally:
        logger.info("drain: stopping the server")
        server.stop()
