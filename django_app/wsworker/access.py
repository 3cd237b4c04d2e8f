"""daphne's access log, written through Python logging (logger `wsworker.access`).

daphne writes its access lines (NCSA style) straight to stdout, around logging:
with LOG_FORMAT=json every handshake, every disconnect and every HTTP request
(the health probes, twice a second per worker) would be a plain line among the
JSON ones, which a log shipper cannot parse, and LOG_LEVEL could not quiet them.
Here each becomes one INFO record, formatted and filtered like every other
record of the worker (token redaction included; daphne's paths carry no query
string anyway).

One line per HTTP request (method, path, status, bytes) and per WebSocket
outcome: connected, rejected (the app or the handshake timeout refused it) or
disconnected. daphne's extra "connecting" line is dropped: every handshake ends
in one of the other three. An access log file named with daphne's --access-log
keeps daphne's own lines (wsworker.server).

A health probe that passes (/healthz or /readyz answered 200) is a DEBUG line:
the native runner's upstream check alone probes each worker twice a second
(170,000 lines a day per worker, drowning the lines that matter). A failing
probe (a 503 from /readyz) stays at INFO.
"""
import logging

from .health import PATHS as PROBE_PATHS

logger = logging.getLogger("wsworker.access")

_WS_ACTIONS = {"connected": "WSCONNECT", "rejected": "WSREJECT", "disconnected": "WSDISCONNECT"}


def drop_twisted_access_log(factory) -> None:
    """Turn off Twisted's own access log on a started HTTP factory (daphne's, the metrics site).

    Beside daphne's lines (log_action), Twisted's HTTPFactory formats a combined-log
    line per request into Twisted's legacy log, which nothing here reads, and keeps
    that line's date current with a timer that wakes the worker every second, idle
    or not: two of an idle worker's wake-ups a second (wsworker.ticks). Its public
    stopFactory() turns both off: it drops the log file (log() then writes nothing)
    and cancels the timer. The listening port is untouched, and the port's own
    stopFactory() at shutdown finds nothing left to do.
    """
    factory.stopFactory()


def log_action(protocol: str, action: str, details: dict) -> None:
    """daphne's action_logger interface: (protocol, action, details)."""
    if protocol == "http" and action == "complete":
        level = logging.DEBUG if _passing_probe(details) else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, '%s "%s %s" %s %s', _client(details), details.get("method"), details.get("path"),
                       details.get("status") or "-", details.get("size") or "-")
    elif protocol == "websocket" and action in _WS_ACTIONS:
        logger.info('%s "%s %s"', _client(details), _WS_ACTIONS[action], details.get("path"))


def _passing_probe(details: dict) -> bool:
    """A probe path answered 200 (daphne's path carries the query string: compared without it)."""
    return details.get("status") == 200 and str(details.get("path") or "").split("?", 1)[0] in PROBE_PATHS


def _client(details: dict) -> str:
    client = details.get("client")
    return client if isinstance(client, str) else "-"
