"""Admission control: whether this worker takes one more WebSocket.

Checked in the protocol's onConnect (wsworker.protocol), i.e. on the HTTP
upgrade request, before anything is accepted or any app code runs. A refused
handshake gets HTTP 503 with Retry-After; nginx (`proxy_next_upstream ...
http_503`) then tries the next worker, so a client sees the 503 only when every
worker refused.

A worker refuses when:
- it holds WS_MAX_SOCKETS sockets (its memory budget: docs/operations.md), or
  fewer when the open-file limit leaves room for fewer (wsworker.fdlimit);
  /readyz is 503 meanwhile, so k8s takes it out of the Service;
- it is draining (SIGTERM): better a 503 nginx retries elsewhere than a
  socket that gets 1012 at once;
- it is busy: MAX_HANDSHAKES handshakes are already in progress. In a reconnect
  storm the loop does them one after the other; more in flight only queue, each
  waits behind all the others, and past the client's open timeout (10 s for
  clients/chatclient.py) the work is wasted and the client retries anyway, so the
  queue grows instead of draining. A quick 503 sends it to another worker, or
  back off with jitter, and the worker keeps its throughput;
- the fleet census (wsworker.census) last saw it above the fleet mean by more
  than WS_BALANCE_TOLERANCE, or it is closing sockets to rebalance
  (wsworker.rebalance): new sockets belong on the workers below the mean.

The census and the rebalancer set the two flags below; nothing here touches
Redis, so a handshake never waits on the network to be admitted. Without Redis
the flags stay False and the cap alone applies.
"""
import logging
import weakref

from . import conf, fdlimit, registry

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2  # what a refused client is told; the census refreshes every second

# Sockets admitted and not yet closed (handshakes in progress included): the
# number the cap, the census and /readyz use. Counted in the protocol, so it
# also covers sockets the app never registers.
open_sockets = 0

# Handshakes admitted and not yet open (the app has not accepted them): short-lived
# entries only, so no cost per established socket.
handshaking = weakref.WeakSet()
MAX_HANDSHAKES = 256

# Set by wsworker.census / wsworker.rebalance at each census (once a second).
above_mean = False
rebalancing = False
fleet: dict | None = None  # the census's last snapshot, as /healthz shows it

REASON_FULL = "full"
REASON_DRAINING = "draining"
REASON_ABOVE_MEAN = "above fleet mean"
REASON_BUSY = "busy"


def limit() -> int:
    cap = int(conf.get("WS_MAX_SOCKETS"))
    fits = fdlimit.socket_cap
    return cap if fits is None else min(cap, fits)


def describe_limit() -> str:
    """The cap and the setting or limit that sets it, for log lines and /readyz."""
    cap = int(conf.get("WS_MAX_SOCKETS"))
    if limit() < cap:
        return f"open-file limit allows {limit()} (WS_MAX_SOCKETS={cap})"
    return f"WS_MAX_SOCKETS={cap}"


def full() -> bool:
    return open_sockets >= limit()


def refusal() -> str | None:
    """Why a new handshake is refused right now, or None to admit it."""
    if registry.state.draining:
        return REASON_DRAINING
    if full():
        return REASON_FULL
    if len(handshaking) >= MAX_HANDSHAKES:
        return REASON_BUSY
    if above_mean or rebalancing:
        return REASON_ABOVE_MEAN
    return None


def admit(proto) -> str | None:
    """Admit one socket (count it) or return why not (counted and logged)."""
    global open_sockets
    reason = refusal()
    if reason is None:
        open_sockets += 1
        handshaking.add(proto)
        return None
    registry.refusals[f"http 503 {reason}"] += 1
    # A full fleet refuses thousands of handshakes a minute: one line per 100 keeps
    # the log readable; /healthz has the exact count.
    total = registry.refusals[f"http 503 {reason}"]
    if total == 1 or total % 100 == 0:
        logger.warning("handshake refused with 503 (%s): %d open, %s; %d refused so far",
                       reason, open_sockets, describe_limit(), total)
    return reason


def opened(proto) -> None:
    """An admitted socket's handshake completed (the app accepted it)."""
    handshaking.discard(proto)


def released(proto) -> None:
    """An admitted socket closed."""
    global open_sockets
    handshaking.discard(proto)
    open_sockets = max(0, open_sockets - 1)


def status() -> dict:
    """For /healthz: what admission sees now."""
    return {"open": open_sockets, "max": limit(), "max_by_open_files": fdlimit.socket_cap,
            "handshaking": len(handshaking), "above_mean": above_mean, "rebalancing": rebalancing, "census": fleet}
