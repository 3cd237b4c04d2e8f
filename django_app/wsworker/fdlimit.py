"""The open-file limit: every WebSocket is a file descriptor.

A worker that holds WS_MAX_SOCKETS sockets needs that many descriptors plus
its own (Redis, Postgres, the metrics port, logs). Container runtimes often
start a process with a soft limit of 1024 (Docker 25+ and containerd 2 give
1024 soft, 524288 hard): past it accept() fails with EMFILE, Twisted stops
accepting for a while, and handshakes time out at nginx with nothing in the
app's log that says why.

At startup the worker raises its soft limit to the hard limit, as nginx's
`worker_rlimit_nofile` does (no privilege needed). If even the hard limit
leaves too few descriptors for WS_MAX_SOCKETS, admission caps the worker at
what fits (HTTP 503 past it, like a full worker: nginx tries the next one)
and the log names the setting and the limit, instead of failing accepts.
"""
import logging
import resource

logger = logging.getLogger(__name__)

# Descriptors kept for what is not a client socket: the listening socket, Redis
# and Postgres connections, the metrics port, log files, handshakes in flight.
RESERVE = 256

# Sockets the open-file limit allows (None: not measured, e.g. outside the worker).
socket_cap: int | None = None


def raise_soft_limit() -> tuple[int, int]:
    """Soft limit := hard limit (when the hard limit is finite and higher); returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1048576)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("open-file limit: could not raise the soft limit %d to %d: %s", soft, target, exc)
    return soft, hard


def apply(max_sockets: int) -> int:
    """Raise the limit, and return how many sockets admission may take (<= max_sockets)."""
    global socket_cap
    soft, hard = raise_soft_limit()
    fits = max(1, soft - RESERVE) if soft != resource.RLIM_INFINITY else max_sockets
    socket_cap = fits
    if fits < max_sockets:
        logger.warning(
            "open-file limit %d (hard %d) leaves room for %d sockets, fewer than WS_MAX_SOCKETS=%d: "
            "this worker refuses handshakes (503) past %d. Raise the container's nofile limit "
            "(compose: ulimits; Kubernetes: the runtime's default) or lower WS_MAX_SOCKETS.",
            soft, hard, fits, max_sockets, fits)
    else:
        logger.info("open-file limit %d (hard %d): room for WS_MAX_SOCKETS=%d", soft, hard, max_sockets)
    return min(fits, max_sockets)
