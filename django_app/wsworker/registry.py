"""Process-local state of one worker: its sockets, its refusals, its deliveries.

One worker process = one registry: /healthz counts these sockets, and the
SIGTERM drain closes them. Nothing here crosses processes (that is Redis's job).

The app's part of the contract: add each accepted consumer to `live` (a
consumer is anything with an async close(code=...) and a `closed` flag), and
count what it refuses in `refusals` and how it delivered in `deliveries`.

Rebalancing (wsworker.rebalance) closes only consumers whose `movable` is
true (an attribute or a property): the app sets it once a socket may be moved
to another worker without loss, i.e. it is welcomed and caught up and nothing
it handed over is still pending. A consumer without `movable` is never moved.
"""
import collections
import os
import socket
import weakref

# WeakSet: a consumer that dies without disconnect() can never pin memory or be
# counted forever.
live = weakref.WeakSet()


class _State:
    draining = False


state = _State()


def worker_id() -> str:
    """How this worker names itself to clients and operators: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def count() -> int:
    return len(live)


# Every refusal this worker made, by kind (error-frame code, close reason, shed):
# exposed on the worker's /healthz so operators can see what is being refused.
refusals = collections.Counter()

# How messages reached this worker's sockets, in writes: "framed" (frames built
# once per worker, one write per socket per run of messages; wsworker.frames)
# or "asgi" (one ASGI send per message; any other server). On /healthz, so an
# operator can see the fast path is in use.
deliveries = collections.Counter()

# Sockets shed to protect the worker (close 1013), by reason. Each shed is also a
# refusal ("close 1013 <reason>" in `refusals`, so /healthz is unchanged); Prometheus
# sees them apart as wsworker_sheds_total (wsworker.metrics).
sheds = collections.Counter()


def shed(reason: str) -> None:
    """Count one shed (slow consumer, room backlog): in `sheds` and in `refusals`."""
    sheds[reason] += 1
    refusals[f"close 1013 {reason}"] += 1

# Sockets this worker closed (1012) to move them to workers below the fleet
# mean (wsworker.rebalance), on /healthz: an operator can see a scale-out settle.
rebalanced = collections.Counter()


async def close_sockets(consumers, code: int, log) -> None:
    """Close each consumer's socket with `code` (drain, Redis resync, shed room).

    Marks them closed first so no further frame is sent; one failing close must
    not spare the others.
    """
    for consumer in consumers:
        try:
            consumer.closed = True
            await consumer.close(code=code)
        except Exception:
            log.warning("closing a socket with %d failed", code, exc_info=True)
