"""A real Prometheus scrapes the native stack (3 ws workers, web, the three exporters)
and shows operators what the test did: sockets, deliveries, lag, refusals, a dead worker.

Everything is read through Prometheus's HTTP API, as a dashboard or an alert would,
after `scripts/local up monitoring` started the Debian prometheus and exporters with
monitoring/rules.yml and monitoring/alerts.yml. Scrapes every second; each check
waits on its condition with a deadline.
"""
import asyncio
import collections
import os
import signal
import time

import pytest
import requests

from tests.stack import NativeStack

from .wsclient import TIMEOUT, new_room, open_chat, recv_json, recv_message, room_url, send_text

WORKERS = 3
DEADLINE = 30.0
# Small limits so a rate-limit close takes 5 frames: 3 accepted (burst), 2 violations.
ENV = {"LOCAL_SCRAPE_INTERVAL": "1s", "CHAT_RATE_BURST": "3", "CHAT_RATE_MAX_VIOLATIONS": "2"}
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

pytestmark = pytest.mark.slow


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[dict]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def values(self, expr: str, label: str) -> dict:
        """{label value: number} of an instant query."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def wait(self, what: str, fetch, ok, deadline: float = DEADLINE):
        """Poll fetch() until ok(value); fail with the last value at the deadline."""
        end, value = time.monotonic() + deadline, None
        while time.monotonic() < end:
            value = fetch()
            if ok(value):
                return value
            time.sleep(0.5)
        raise AssertionError(f"{what}: still {value!r} after {deadline}s")


@pytest.fixture(scope="module")
def stack():
    with NativeStack(workers=WORKERS, env=ENV) as s:
        s.run_local("up", "monitoring")
        yield s


@pytest.fixture(scope="module")
def prom(stack):
    p = Prometheus(f"http://127.0.0.1:{stack.metrics_port('prometheus')}")

    def health():
        targets = requests.get(f"{p.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return sorted((t["labels"]["job"], t["health"]) for t in targets)

    want = sorted([("ws", "up")] * WORKERS + [(j, "up") for j in ("web", "nginx", "redis", "postgres",
                                                                 "prometheus")])
    p.wait("targets", health, lambda got: got == want)
    return p


def test_every_exporter_reports_its_backend_up(prom):
    assert prom.values("up", "job") == {j: 1.0 for j in ("ws", "web", "nginx", "redis", "postgres", "prometheus")}
    for metric in ("redis_up", "pg_up", "nginx_up"):
        assert [float(s["value"][1]) for s in prom.query(metric)] == [1.0], metric


def test_metrics_and_stub_status_are_never_public(stack):
    for path in ("/metrics", "/stub_status", "/metrics?x=1"):
        assert requests.get(stack.http_url + path, timeout=5).status_code == 404, path
    # They are where Prometheus reads them: internal ports only.
    assert requests.get(f"http://127.0.0.1:{stack.metrics_port('ws', 1)}/metrics", timeout=5).ok
    assert requests.get(f"http://127.0.0.1:{stack.metrics_port('nginx-status')}/stub_status", timeout=5).ok


def test_web_requests_are_counted_by_view_and_status(stack, prom):
    for _ in range(3):
        assert requests.get(stack.http_url + "/healthz", timeout=5).ok
    expr = 'sum(django_http_responses_total_by_status_view_method_total{view="healthz",status="200"})'
    prom.wait("healthz 200s", lambda: prom.values(expr, ""), lambda v: v.get("", 0) >= 3)


async def test_sockets_deliveries_and_lag_as_operators_see_them(stack, prom):
    room = new_room("prom")
    # One socket straight on each worker (each then has the room), three through nginx.
    urls = stack.ws_worker_urls + [stack.ws_base] * 3
    opened = [await open_chat(url, room) for url in urls]
    sockets = [ws for ws, _ in opened]
    try:
        held = collections.Counter(welcome["worker"] for _, welcome in opened)
        per_worker = 'wsworker_sockets_open * on (instance) group_left (worker) wsworker_info'
        prom.wait("open sockets by worker", lambda: prom.values(per_worker, "worker"),
                  lambda got: got == {w: float(n) for w, n in held.items()})

        deliveries = 'sum(wsworker_deliveries_total)'
        before = prom.values(deliveries, "").get("", 0.0)
        # Each message from a different socket (each has its own rate-limit bucket),
        # one at a time: every other socket gets it in one write of its own.
        latencies = []
        for i, sender in enumerate(sockets):
            text = f"m{i}"
            start = time.monotonic()
            await send_text(sender, text)
            for ws in sockets:
                await recv_message(ws, text)
            latencies.append(time.monotonic() - start)
        sent = len(sockets)
        expected = before + sent * (len(sockets) - 1)
        prom.wait("deliveries", lambda: prom.values(deliveries, "").get("", 0.0), lambda v: v == expected)

        lag_count = 'wsworker_publish_to_deliver_seconds_count * on (instance) group_left (worker) wsworker_info'
        prom.wait("lag observations per worker (once per message)", lambda: prom.values(lag_count, "worker"),
                  lambda got: got == {w: float(sent) for w in held})
        p99 = prom.values('histogram_quantile(0.99, sum by (le) (wsworker_publish_to_deliver_seconds_bucket))', "")[""]
        # At the histogram's resolution: p99 lies within the bucket holding the slowest
        # fan-out the clients measured (send -> last socket received), or below it.
        bound = next((b for b in LAG_BUCKETS if b >= max(latencies)), float("inf"))
        assert 0 < p99 <= bound, (p99, latencies)
        assert prom.values("chat_rooms_local", "instance") == {
            f"127.0.0.1:{stack.metrics_port('ws', i)}": 1.0 for i in range(1, WORKERS + 1)}
        stored = prom.values("sum(chat_messages_stored_total)", "")[""]
        assert stored == sent
    finally:
        for ws in sockets:
            await ws.close()


async def _closed_with(url: str, **kwargs) -> int:
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=TIMEOUT, **kwargs) as ws:
        try:
            while True:
                await recv_json(ws)
        except Exception:
            pass
        return ws.close_code


async def test_refusals_by_reason_match_what_was_provoked(stack, prom):
    expr = "sum by (reason) (wsworker_refusals_total)"
    before = prom.values(expr, "reason")
    assert await _closed_with(room_url(stack.ws_base, "no.dots")) == 4400
    assert await _closed_with(room_url(stack.ws_base, new_room()), origin="http://evil.example") == 4403
    ws, _ = await open_chat(stack.ws_base, new_room("flood"))
    for i in range(5):  # 3 within the burst, then 2 violations: the second closes with 4429
        await send_text(ws, f"flood {i}")
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.close_code == 4429
    provoked = {"close 4400 invalid room name": 1, "close 4403 origin": 1, "rate_limited": 2,
                "close 4429 rate limit": 1}
    want = {reason: before.get(reason, 0.0) + n for reason, n in provoked.items()}
    prom.wait("refusals by reason", lambda: prom.values(expr, "reason"),
              lambda got: {r: got.get(r) for r in want} == want and set(got) == set(want) | set(before))


def test_a_killed_worker_is_down_and_alerted(stack, prom):
    instance = f"127.0.0.1:{stack.metrics_port('ws', WORKERS)}"
    os.kill(stack.pid("ws", WORKERS), signal.SIGKILL)
    prom.wait("up of the killed worker", lambda: prom.values(f'up{{job="ws",instance="{instance}"}}', "instance"),
              lambda got: got == {instance: 0.0})

    def alerts():
        data = requests.get(f"{prom.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [(a["labels"]["alertname"], a["labels"].get("instance"), a["state"]) for a in data
                if a["labels"]["alertname"] == "WsWorkerDown"]

    # `for: 1m` keeps it pending first: active, on its way to firing.
    prom.wait("WsWorkerDown", alerts, lambda got: [(n, i) for n, i, _ in got] == [("WsWorkerDown", instance)]
              and got[0][2] in ("pending", "firing"))
