"""What an app registers with the worker runtime, instead of being imported by it.

The runtime must serve any Channels project, so it never imports the app; the
app's AppConfig.ready() registers callbacks here (chat/apps.py does):

- on_resync(fn): `await fn()` after the Redis channel layer was flushed because
  Redis restarted or came back (wsworker.layerwatch). Subscriptions made on the
  old connection are gone: resubscribe and read what was missed.
- on_drain(fn): `await fn(timeout) -> bool` once the drain has closed the sockets:
  finish work they handed over before the close (True when it is all done).
"""
import logging

logger = logging.getLogger(__name__)

resync_callbacks: list = []
drain_callbacks: list = []


def on_resync(fn):
    if fn not in resync_callbacks:
        resync_callbacks.append(fn)
    return fn


def on_drain(fn):
    if fn not in drain_callbacks:
        drain_callbacks.append(fn)
    return fn


async def run_resync() -> None:
    for fn in list(resync_callbacks):
        try:
            await fn()
        except Exception:
            logger.exception("resync callback %r failed", fn)


async def run_drain(timeout: float) -> bool:
    """True when every callback finished its work within its share of `timeout`."""
    done = True
    for fn in list(drain_callbacks):
        try:
            done = bool(await fn(timeout)) and done
        except Exception:
            logger.exception("drain callback %r failed", fn)
            done = False
    return done
