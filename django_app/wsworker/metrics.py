"""Prometheus metrics of one ws worker, served on WS_METRICS_PORT (never through nginx).

Why a collector rather than prometheus_client Counters on the hot path: a worker
writes thousands of frames a second and holds thousands of sockets, so nothing
per socket or per message may take a lock or allocate a metric object. The
runtime and the app count with plain ints and collections.Counter where things
happen (registry.refusals, registry.deliveries, the Counters below), and
WorkerCollector turns them into metric families when Prometheus scrapes.
Histograms observed per message are `Histogram`s of this module: a bisect and
two additions, read at scrape time. Everything, the scrape included (served by
daphne's reactor), runs on the worker's one event-loop thread: no locks needed.

How an app adds its own (chat/metrics.py does; the names are documented in
docs/operations.md):

- `gauge(name, doc, fn)`: fn() is read at each scrape (chat: rooms with local sockets);
- `counter(name, doc)` -> Count, `histogram(name, doc, buckets)` -> Histogram: cheap
  instruments the app updates on its hot path;
- `publish_to_deliver`: the app observes, once per message per worker, the seconds
  from the message being stored to its write on this worker's sockets.

Process metrics (RSS, CPU, open fds, GC) come from prometheus_client's default
collectors on the same registry.
"""
import asyncio
import bisect
import collections
import logging
import math

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from . import access, registry, ticks

logger = logging.getLogger(__name__)

# Counted by the runtime where it happens (plain dict increments):
handshakes = collections.Counter()  # outcome: accepted / rejected (app closed before accept, HTTP 403)
closes = collections.Counter()  # (by, code): who closed a WebSocket (server / client) and the code
written_bytes = collections.Counter()  # path -> bytes written to sockets by send_frames ("framed")
redis_resyncs = collections.Counter()  # why: restarted / came back (wsworker.layerwatch)


class _Layer:
    up = True  # the channel layer's Redis answered the watcher's last poll (wsworker.layerwatch)


layer = _Layer()

LAG_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LOOP_CHECK_SECONDS = 1.0


class Count:
    """A counter for the hot path: `c.value += n` (or inc()), exported as NAME_total."""

    __slots__ = ("name", "documentation", "value")

    def __init__(self, name: str, documentation: str):
        self.name, self.documentation, self.value = name, documentation, 0

    def inc(self, n: int = 1) -> None:
        self.value += n

    def family(self):
        fam = CounterMetricFamily(self.name, self.documentation)
        fam.add_metric([], self.value)
        return fam


class Histogram:
    """A histogram the hot path can afford: observe() is a bisect and two additions.

    Same exposition as prometheus_client's Histogram (NAME_bucket{le}, _sum, _count),
    built at scrape time; single-threaded by design (the worker's event loop).
    """

    __slots__ = ("name", "documentation", "bounds", "counts", "sum")

    def __init__(self, name: str, documentation: str, buckets=LAG_SECONDS):
        self.name, self.documentation = name, documentation
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self):
        running, buckets = 0, []
        for bound, n in zip(self.bounds + (math.inf,), self.counts):
            running += n
            buckets.append((floatToGoString(bound), running))
        return HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=self.sum)


_instruments: list = []  # Count and Histogram objects, exported as they are
_gauges: list = []  # (name, documentation, fn)


def counter(name: str, documentation: str) -> Count:
    c = Count(name, documentation)
    _instruments.append(c)
    return c


def histogram(name: str, documentation: str, buckets=LAG_SECONDS) -> Histogram:
    h = Histogram(name, documentation, buckets)
    _instruments.append(h)
    return h


def gauge(name: str, documentation: str, fn) -> None:
    """Export fn() (a number, read at each scrape) as the gauge `name`."""
    _gauges.append((name, documentation, fn))


publish_to_deliver = histogram(
    "wsworker_publish_to_deliver_seconds",
    "Seconds from a message being stored to its write on this worker's sockets, once per message per worker.",
)
event_loop_lag = histogram(
    "wsworker_event_loop_lag_seconds",
    f"How late a timer set for {LOOP_CHECK_SECONDS}s fired: time the event loop was busy or blocked.",
)


def _labelled(name, documentation, labels, counts):
    """A counter family from a Counter: one sample per key (a tuple key fills several labels)."""
    fam = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(counts.items()):
        fam.add_metric([str(k) for k in (key if isinstance(key, tuple) else (key,))], value)
    return fam


class WorkerCollector:
    """Reads the runtime's and the app's plain counters at scrape time."""

    def collect(self):
        info = GaugeMetricFamily("wsworker_info", "This worker as it names itself to clients (welcome frame).",
                                 labels=["worker"])
        info.add_metric([registry.worker_id()], 1)
        yield info
        yield GaugeMetricFamily("wsworker_sockets_open", "WebSockets the app holds open on this worker.",
                                value=registry.count())
        yield GaugeMetricFamily("wsworker_draining", "1 while the worker drains (SIGTERM: readiness off, close 1012).",
                                value=int(registry.state.draining))
        yield GaugeMetricFamily("wsworker_channel_layer_up", "1 when the channel layer's Redis answered the "
                                "worker's last poll (every second).", value=int(layer.up))
        yield GaugeMetricFamily("wsworker_ready", "1 when /readyz would answer 200: not draining and the "
                                "channel layer answers.", value=int(layer.up and not registry.state.draining))
        yield _labelled("wsworker_handshakes", "WebSocket handshakes by outcome: accepted, or rejected (HTTP 403).",
                        ["outcome"], handshakes)
        yield _labelled("wsworker_socket_closes", "WebSockets closed, by who closed (server/client) and close code.",
                        ["by", "code"], closes)
        yield _labelled("wsworker_deliveries", "Writes of room messages to sockets, by path: framed (pre-built "
                        "frames, one write per socket per run) or asgi (one ASGI send per message).",
                        ["path"], registry.deliveries)
        yield _labelled("wsworker_written_bytes", "Bytes of pre-built frames written to sockets, by path.",
                        ["path"], written_bytes)
        yield _labelled("wsworker_refusals", "Everything refused, by reason: error frames, policy closes, sheds "
                        "(the same counts as /healthz refusals).", ["reason"], registry.refusals)
        yield _labelled("wsworker_sheds", "Sockets shed by the worker to protect itself (close 1013), by reason.",
                        ["reason"], registry.sheds)
        yield _labelled("wsworker_redis_resyncs", "Channel-layer flushes and app resyncs after Redis restarted or "
                        "came back.", ["why"], redis_resyncs)
        for name, documentation, fn in _gauges:
            try:
                value = fn()
            except Exception:
                logger.exception("metrics: gauge %s failed", name)
                continue
            yield GaugeMetricFamily(name, documentation, value=value)
        for instrument in _instruments:
            yield instrument.family()


REGISTRY.register(WorkerCollector())


# --------------------------------------------------------------- event-loop lag
_lag_task = None


async def _watch_loop() -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = ticks.at(LOOP_CHECK_SECONDS, loop.time())  # with the worker's other chores (wsworker.ticks)
        await ticks.sleep(LOOP_CHECK_SECONDS)
        event_loop_lag.observe(max(0.0, loop.time() - due))


def start_loop_watch() -> None:
    global _lag_task
    if _lag_task is None or _lag_task.done():
        _lag_task = asyncio.get_event_loop().create_task(_watch_loop(), name="wsworker-looplag")


# ----------------------------------------------------------------- /metrics page
def serve(port: int, interface: str):
    """Listen on interface:port for GET /metrics, in the reactor (so on the loop thread).

    A port of its own, not a path on the WebSocket port: nginx proxies /ws/ to the
    worker's main port only, so /metrics can never be reached through it.
    """
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class MetricsPage(Resource):
        isLeaf = True

        def render_GET(self, request):
            if request.path != b"/metrics":
                request.setResponseCode(404)
                return b"not found: GET /metrics\n"
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(REGISTRY)

    site = Site(MetricsPage())
    listening = reactor.listenTCP(port, site, interface=interface)
    access.drop_twisted_access_log(site)  # no line per scrape, no per-second timer
    logger.info("metrics: http://%s:%d/metrics", interface, port)
    return listening
