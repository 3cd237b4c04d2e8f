"""The chat app's metrics, on the ws worker's /metrics (wsworker.metrics serves them).

Room delivery calls one function here per event, so chat.delivery stays about
delivery; every instrument is a plain-int one of wsworker.metrics (no lock, no
object per socket). Names, units and how to read them: docs/operations.md.
"""
import time
from datetime import datetime

from django.conf import settings

from wsworker import metrics

# WS_METRICS_PORT=0: nothing scrapes this worker, so the per-message work is skipped
# (`make bench` prices metrics with it: stack ours+nometrics).
ON = bool(settings.WS_METRICS_PORT)

BATCH_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500)

messages_stored = metrics.counter("chat_messages_stored_total", "Messages this worker stored in Postgres.")
store_failures = metrics.counter("chat_store_failures_total",
                                 "Batches this worker failed to store (senders got chat.error unavailable).")
batch_size = metrics.histogram("chat_store_batch_size_messages",
                               "Messages per INSERT of the group-commit writer.", BATCH_SIZES)
store_seconds = metrics.histogram("chat_store_duration_seconds",
                                  "Seconds one batch took to store (the INSERT and its commit).")
gap_fills = metrics.counter("chat_gap_fills_total",
                            "Reads of missing ids from Postgres that delivered messages (a lost or late publish).")
gap_fill_messages = metrics.counter("chat_gap_fill_messages_total", "Messages delivered by gap fills.")

_TS = '"ts":"'


def timed_store(persist):
    """Wrap the Writer's async store call: count, time and size every batch."""

    async def timed(*args):
        start = time.perf_counter()
        try:
            stored = await persist(*args)
        except BaseException:
            store_failures.value += 1
            raise
        store_seconds.observe(time.perf_counter() - start)
        batch_size.observe(len(stored))
        messages_stored.value += len(stored)
        return stored

    return timed


def gap_filled(count: int) -> None:
    gap_fills.value += 1
    gap_fill_messages.value += count


def delivered(texts) -> None:
    """Once per message per worker, after its write to the local sockets: its age.

    The age is measured from the message's `ts` (Postgres's statement time when it
    was stored), the last field of the wire JSON, so no JSON parsing is needed.
    """
    if not ON:
        return
    now = time.time()
    observe = metrics.publish_to_deliver.observe
    for text in texts:
        at = text.rfind(_TS)
        if at < 0:
            continue
        try:
            stored = datetime.fromisoformat(text[at + len(_TS):text.index('"', at + len(_TS))]).timestamp()
        except ValueError:
            continue
        observe(max(0.0, now - stored))


def register_rooms_gauge(count_rooms) -> None:
    metrics.gauge("chat_rooms_local", "Rooms with at least one socket on this worker.", count_rooms)
