"""Another Channels project runs under `python -m wsworker`, drain and health included.

The project (tests/unit/ownproject) has its own settings and ASGI app and shares
nothing with config/ or chat/ but the worker runtime, as docs/architecture.md
("Run your own Channels project on this stack") tells an ops team to do.
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websockets

from .conftest import free_port

HERE = Path(__file__).resolve().parent
DJANGO_APP = HERE.parents[1] / "django_app"


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_http(url, deadline):
    while time.monotonic() < deadline:
        try:
            return _get(url)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in time")


@pytest.fixture
def own_worker(request):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DJANGO_SETTINGS_MODULE="ownproject.settings", WS_DRAIN_SECONDS="3",
               PYTHONPATH=os.pathsep.join([str(HERE), str(DJANGO_APP)]))
    env.update(getattr(request, "param", {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(port), "ownproject.asgi:application"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.slow
def test_own_project_serves_health_and_drains_with_1012(own_worker):
    proc, port = own_worker
    base = f"http://127.0.0.1:{port}"

    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/", open_timeout=5) as echo, \
                websockets.connect(f"ws://127.0.0.1:{port}/ws/plain/", open_timeout=5) as plain:
            await echo.send("hi")
            assert await asyncio.wait_for(echo.recv(), 5) == "echo: hi"
            await plain.send("there")
            assert await asyncio.wait_for(plain.recv(), 5) == "echo: there"
            status, health = _get(base + "/healthz")
            assert status == 200 and health["sockets"] == 1  # only /ws/echo/ registers
            assert _get(base + "/readyz")[0] == 200  # no channel layer: nothing else to check
            proc.send_signal(signal.SIGTERM)
            codes = []
            for ws in (echo, plain):
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 5)
                codes.append(closed.value.rcvd.code)
            return codes

    assert asyncio.run(scenario()) == [1012, 1012]
    assert proc.wait(timeout=10) == 0
    log = proc.stdout.read()
    assert "drain: closing 1 socket(s) with 1012" in log and "drain: stopping the server" in log


@pytest.mark.slow
@pytest.mark.parametrize("own_worker", [{"WS_MAX_SOCKETS": "2"}], indirect=True)
def test_without_redis_the_cap_alone_admits(own_worker):
    """No Redis channel layer, so no census: WS_MAX_SOCKETS alone decides, before the upgrade."""
    _proc, port = own_worker
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/echo/"

    async def scenario():
        async with websockets.connect(url, open_timeout=5) as first, websockets.connect(url, open_timeout=5):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, open_timeout=5)
            response = refused.value.response
            assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
            status, body = _get(base + "/readyz")
            assert status == 503 and body["status"] == "full", body
            status, health = _get(base + "/healthz")
            assert health["admission"]["open"] == 2 and health["admission"]["census"] is None
            assert health["refusals"] == {"http 503 full": 1}
            await first.close()
            deadline = time.monotonic() + 5
            while _get(base + "/healthz")[1]["admission"]["open"] != 1:
                assert time.monotonic() < deadline, "the closed socket was never released"
                await asyncio.sleep(0.05)
            async with websockets.connect(url, open_timeout=5) as again:
                await again.send("back")
                assert await asyncio.wait_for(again.recv(), 5) == "echo: back"
            assert _get(base + "/readyz")[0] == 200

    asyncio.run(scenario())
