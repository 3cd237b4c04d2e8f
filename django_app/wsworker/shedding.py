"""Shed slow or stuck clients before they cost the worker memory or their room its pace."""
import logging

from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor

from . import conf, registry, ticks
from .protocol import CLOSE_OVERLOADED, unsent_bytes

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
GRACE_SECONDS = 2.0


def start(server) -> None:
    reactor.callLater(ticks.delay(CHECK_SECONDS), _check, server)


def _check(server) -> None:
    """Close sockets whose unsent backlog exceeds WS_MAX_SEND_BUFFER_BYTES.

    A slow or stuck client must neither grow this worker's memory without bound
    nor slow its room down: it gets close 1013 (try again later; it resumes and
    loses nothing) and, if it does not even read that, the TCP connection is
    aborted. Each shed is logged and counted on /healthz.
    """
    limit = conf.get("WS_MAX_SEND_BUFFER_BYTES")
    try:
        # Only a socket waiting for writability can hold a backlog: Twisted registers
        # every transport with unsent bytes as a writer until they are sent (and
        # write_soon's flush does so for what the kernel refused). Looking at those
        # alone keeps this check's cost off the sockets that keep up (all but a few
        # of thousands), rather than touching every socket every second.
        for transport in reactor.getWriters():
            proto = getattr(transport, "protocol", None)
            if not isinstance(proto, WebSocketProtocol) or getattr(proto, "wsworker_shed", False):
                continue
            backlog = unsent_bytes(proto.transport)
            if backlog <= limit:
                continue
            proto.wsworker_shed = True
            registry.shed("slow consumer")
            logger.warning(
                "shed slow client %s: %d bytes unsent > WS_MAX_SEND_BUFFER_BYTES=%d, closing %d",
                getattr(proto, "client_addr", "?"), backlog, limit, CLOSE_OVERLOADED,
            )
            proto.serverClose(code=CLOSE_OVERLOADED)
            reactor.callLater(GRACE_SECONDS, proto.transport.abortConnection)
    except Exception:
        logger.exception("slow-client check failed")
    reactor.callLater(ticks.delay(CHECK_SECONDS), _check, server)  # wsworker.ticks
