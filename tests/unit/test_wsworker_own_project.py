"""Another Channels project runs under `python -m wsworker`, drain and health included.

The project (tests/unit/ownproject) has its own settings and ASGI app and shares
nothing with config/ or chat/ but the worker runtime, as docs/architecture.md
("Run your own Channels project on this stack") tells an ops team to do.
"""
import asyncio
import json
import os
import resource
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
    params = dict(getattr(request, "param", {}))
    nofile = params.pop("nofile", None)  # (soft, hard) open-file limit the worker starts with
    env.update(params)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(port), "ownproject.asgi:application"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None,
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


def _open_file_limits(pid):
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


async def _open_echo_sockets(url, count):
    sockets = []
    for _ in range(count):
        sockets.append(await websockets.connect(url, open_timeout=5))
    return sockets


@pytest.mark.slow
@pytest.mark.parametrize("own_worker", [{"nofile": (64, 4096), "WS_MAX_SOCKETS": "300"}], indirect=True)
def test_worker_raises_its_open_file_limit_and_holds_sockets_past_the_old_one(own_worker):
    """Started with the soft limit many runtimes give (low) and a higher hard one,
    the worker raises its soft limit and holds more sockets than it started with."""
    proc, port = own_worker
    assert _open_file_limits(proc.pid) == (4096, 4096)
    url = f"ws://127.0.0.1:{port}/ws/echo/"

    async def scenario():
        sockets = await _open_echo_sockets(url, 150)  # > 64 descriptors
        try:
            for i, ws in enumerate(sockets):
                await ws.send(f"m{i}")
            replies = [await asyncio.wait_for(ws.recv(), 5) for ws in sockets]
            assert replies == [f"echo: m{i}" for i in range(150)]
            assert _get(f"http://127.0.0.1:{port}/healthz")[1]["admission"]["max"] == 300
        finally:
            for ws in sockets:
                await ws.close()

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("own_worker", [{"nofile": (300, 300)}], indirect=True)
def test_a_hard_open_file_limit_below_ws_max_sockets_caps_admission_and_says_why(own_worker):
    """A hard limit of 300 descriptors cannot hold WS_MAX_SOCKETS=10000: the worker
    admits what fits (300 - fdlimit.RESERVE), answers 503 past it like a full worker,
    and its log and /readyz name the limit and the setting."""
    from wsworker import fdlimit

    proc, port = own_worker
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/echo/"
    fits = 300 - fdlimit.RESERVE
    assert _get(base + "/healthz")[1]["admission"]["max"] == fits

    async def scenario():
        sockets = await _open_echo_sockets(url, fits)
        try:
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, open_timeout=5)
            assert refused.value.response.status_code == 503
            status, body = _get(base + "/readyz")
            assert status == 503 and f"open-file limit allows {fits} (WS_MAX_SOCKETS=10000)" in body["reason"], body
            await sockets[0].send("still here")
            assert await asyncio.wait_for(sockets[0].recv(), 5) == "echo: still here"
        finally:
            for ws in sockets:
                await ws.close()

    asyncio.run(scenario())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log = proc.stdout.read()
    assert (f"open-file limit 300 (hard 300) leaves room for {fits} sockets, fewer than WS_MAX_SOCKETS=10000"
            in log), log[-3000:]
