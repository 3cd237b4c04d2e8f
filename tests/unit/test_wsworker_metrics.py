"""wsworker.metrics: the worker's Prometheus exposition, for this project and any other.

Read the way Prometheus reads it: the text format parsed by prometheus_client's
own parser, from a real worker's metrics port (the second project under
tests/unit/ownproject, which shares nothing with chat).
"""
import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from wsworker import metrics

from .conftest import free_port

HERE = Path(__file__).resolve().parent
DJANGO_APP = HERE.parents[1] / "django_app"


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of an exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    h = metrics.Histogram("t_seconds", "test", buckets=(0.1, 1))
    for v in (0.05, 0.1, 0.5, 1, 7):
        h.observe(v)
    fam = h.family()
    got = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
    assert got == {("t_seconds_bucket", "0.1"): 2, ("t_seconds_bucket", "1.0"): 4,
                   ("t_seconds_bucket", "+Inf"): 5, ("t_seconds_count", None): 5,
                   ("t_seconds_sum", None): pytest.approx(8.65)}


def test_publish_to_deliver_is_the_age_of_each_message_once():
    from chat import metrics as chat_metrics
    from chat import protocol

    h = metrics.publish_to_deliver
    before, total = h.count, h.sum
    stamp = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat(timespec="milliseconds")
    texts = [protocol.dumps(protocol.message_dict(i, "r", "u", 'say "ts":"x"', stamp)) for i in (1, 2)]
    chat_metrics.delivered(texts)
    assert h.count == before + 2
    assert 3.99 <= h.sum - total <= 4.5  # two messages, each 2 s old


@pytest.fixture
def worker():
    port, mport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DJANGO_SETTINGS_MODULE="ownproject.settings", WS_METRICS_PORT=str(mport),
               PYTHONPATH=os.pathsep.join([str(HERE), str(DJANGO_APP)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(port), "ownproject.asgi:application"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"metrics port never answered: {proc.communicate()[0][-2000:]}")
            time.sleep(0.1)
    try:
        yield port, mport
    finally:
        proc.kill()
        proc.wait(timeout=5)


def scrape(mport: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return samples(resp.read().decode())


@pytest.mark.slow
def test_any_projects_worker_serves_its_metrics_on_its_own_port(worker):
    port, mport = worker

    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/", open_timeout=5) as echo:
            await echo.send("hi")
            assert await asyncio.wait_for(echo.recv(), 5) == "echo: hi"
            held = scrape(mport)
        return held

    held = asyncio.run(scenario())
    assert held[("wsworker_sockets_open", frozenset())] == 1
    assert held[("wsworker_handshakes_total", frozenset({("outcome", "accepted")}))] == 1
    assert held[("wsworker_ready", frozenset())] == 1 and held[("wsworker_draining", frozenset())] == 0
    assert held[("process_resident_memory_bytes", frozenset())] > 0
    assert held[("wsworker_event_loop_lag_seconds_count", frozenset())] >= 0
    assert not [name for name, _ in held if name.startswith("chat_")], "the app's metrics come from the app"
    deadline = time.monotonic() + 10
    while (after := scrape(mport))[("wsworker_sockets_open", frozenset())] != 0:
        assert time.monotonic() < deadline, "the closed socket is still counted"
        time.sleep(0.1)
    assert after[("wsworker_socket_closes_total", frozenset({("by", "client"), ("code", "1000")}))] == 1
    # Only /metrics: the metrics port serves nothing else.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/healthz", timeout=5)
    assert err.value.code == 404


@pytest.mark.slow
def test_a_busy_metrics_port_stops_the_worker_with_the_settings_name():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        mport = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        env.update(DJANGO_SETTINGS_MODULE="ownproject.settings", WS_METRICS_PORT=str(mport),
                   PYTHONPATH=os.pathsep.join([str(HERE), str(DJANGO_APP)]))
        proc = subprocess.run(
            [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(free_port()),
             "ownproject.asgi:application"],
            cwd=HERE, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"cannot listen on WS_METRICS_PORT={mport}" in proc.stdout + proc.stderr
