"""The ws worker's own HTTP probes and the SIGTERM drain of `python -m wsworker`."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets
from channels.testing import HttpCommunicator
from django.db import connection

from wsworker import registry
from config.asgi import application

from .conftest import free_port, welcome

DJANGO_APP = Path(__file__).resolve().parents[2] / "django_app"


async def _get(path):
    comm = HttpCommunicator(application, "GET", path)
    resp = await comm.get_response(timeout=5)
    return resp["status"], json.loads(resp["body"])


@pytest.mark.django_db(transaction=True)
async def test_worker_healthz_counts_live_sockets():
    status, body = await _get("/healthz")
    assert status == 200 and body["status"] == "ok"
    assert body["worker"].endswith(f":{os.getpid()}")
    before = body["sockets"]
    client, _ = await welcome("/ws/chat/health/")
    assert (await _get("/healthz"))[1]["sockets"] == before + 1
    await client.close()


async def test_worker_readyz_ok_with_redis():
    assert await _get("/readyz") == (200, {"status": "ok", "worker": (await _get("/healthz"))[1]["worker"]})


async def test_worker_readyz_503_when_redis_unreachable(settings):
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS, default=str))
    layers["default"]["CONFIG"]["hosts"][0]["address"] = f"redis://127.0.0.1:{free_port()}/0"
    settings.CHANNEL_LAYERS = layers
    status, body = await _get("/readyz")
    assert status == 503 and body["reason"].startswith("redis:")


async def test_worker_readyz_degraded_but_ready_when_one_of_two_shards_is_down(settings):
    """Losing one shard stops only its rooms, on every worker alike: stay in rotation, name the shard."""
    layers = json.loads(json.dumps(settings.CHANNEL_LAYERS, default=str))
    live = layers["default"]["CONFIG"]["hosts"][0]
    dead_port = free_port()
    layers["default"]["CONFIG"]["hosts"] = [live, {**live, "address": f"redis://127.0.0.1:{dead_port}/0"}]
    settings.CHANNEL_LAYERS = layers
    status, body = await _get("/readyz")
    assert status == 200 and body["status"] == "degraded"
    assert list(body["redis"]) == [f"redis://127.0.0.1:{dead_port}/0"]


async def test_worker_readyz_503_while_draining():
    registry.state.draining = True
    try:
        status, body = await _get("/readyz")
    finally:
        registry.state.draining = False
    assert status == 503 and body["status"] == "draining"


@pytest.mark.django_db(transaction=True)
async def test_new_handshake_while_draining_is_1012():
    from .conftest import Client

    registry.state.draining = True
    try:
        client = await Client("/ws/chat/lobby/").connect()
        assert await client.closed_with() == 1012
    finally:
        registry.state.draining = False


async def test_other_http_paths_reach_django():
    comm = HttpCommunicator(application, "GET", "/", headers=[(b"host", b"localhost")])
    resp = await comm.get_response(timeout=5)
    assert resp["status"] == 200 and b"Pick a room" in resp["body"]


def _wait_http(url, deadline):
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in time")


def _start_worker(port, *args, **env_overrides):
    """The real worker process (`python -m wsworker`), as services/bin/ws runs it;
    `args`: more of its command-line options."""
    env = dict(os.environ, POSTGRES_DB=connection.settings_dict["NAME"], **env_overrides)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(port), *args, "config.asgi:application"],
        cwd=DJANGO_APP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if _wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20) != 200:
        proc.kill()
        raise AssertionError("worker did not answer /healthz")
    return proc


def _stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm_drains_sockets_with_1012_and_exits_0():
    port = free_port()
    drain_seconds = 5
    proc = _start_worker(port, WS_DRAIN_SECONDS=str(drain_seconds))
    try:
        async def scenario():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/drain/", open_timeout=5) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "chat.welcome"
                proc.send_signal(signal.SIGTERM)
                started = time.monotonic()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), drain_seconds)
                return closed.value.rcvd.code, time.monotonic() - started

        code, took = asyncio.run(scenario())
        assert code == 1012 and took < drain_seconds
        assert proc.wait(timeout=drain_seconds + 5) == 0
    finally:
        _stop(proc)
    log = proc.stdout.read()
    assert "drain: closing 1 socket(s)" in log and "every socket closed" in log


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_writes_room_messages_as_prebuilt_frames_in_order():
    """Under the real worker the Room writes frames built once (wsworker.server's
    extension), and a burst, long and non-ASCII messages included, still reaches
    every socket complete, in id order, exactly once."""
    port = free_port()
    proc = _start_worker(port, CHAT_RATE_PER_SEC="1000", CHAT_RATE_BURST="1000")
    texts = [f"burst {i}:" + ("é" * (i * 37 % 1900)) for i in range(60)]
    try:
        async def scenario():
            url = f"ws://127.0.0.1:{port}/ws/chat/frames/"
            readers = [await websockets.connect(url, open_timeout=5, max_size=None) for _ in range(3)]
            sender = await websockets.connect(url, open_timeout=5)
            try:
                for ws in [*readers, sender]:
                    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "chat.welcome"
                for text in texts:
                    await sender.send(json.dumps({"message": text}))
                got = []
                for ws in readers:
                    frames = []
                    while len(frames) < len(texts):
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                    got.append(frames)
                return got
            finally:
                for ws in [*readers, sender]:
                    await ws.close()

        got = asyncio.run(scenario())
        for frames in got:
            assert [f["message"] for f in frames] == texts
            ids = [f["id"] for f in frames]
            assert ids == list(range(ids[0], ids[0] + len(texts)))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            deliveries = json.load(resp)["deliveries"]
        assert deliveries.get("framed", 0) >= 3 and deliveries.get("asgi", 0) == 0, deliveries
    finally:
        _stop(proc)


async def test_reaper_looks_only_at_ended_connections_and_reaps_like_daphne(monkeypatch, caplog):
    """WorkerServer.application_checker: a connection whose socket and application
    both ended is forgotten, one whose application is still closing is looked at
    again, a live one is left alone, and an application's crash is still logged."""
    import daphne.server
    from wsworker.server import WorkerServer

    monkeypatch.setattr(daphne.server.reactor, "callLater", lambda *a, **k: None)
    server = WorkerServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    loop = asyncio.get_running_loop()

    def app(result=None, exc=None):
        fut = loop.create_future()
        if exc is not None:
            fut.set_exception(exc)
        elif result is not None:
            fut.set_result(result)
        return fut

    live, gone, closing, crashed = (object() for _ in range(4))
    server.connections = {
        live: {"application_instance": app()},
        gone: {"application_instance": app(result=True), "disconnected": time.time()},
        closing: {"application_instance": app(), "disconnected": time.time()},
        crashed: {"application_instance": app(exc=ValueError("boom")), "disconnected": time.time()},
    }
    server._to_reap = {gone, closing, crashed}
    server.application_checker()
    assert set(server.connections) == {live, closing}
    assert server._to_reap == {closing}, "a connection still closing is looked at again"
    assert "Exception inside application: boom" in caplog.text
    server.connections[closing]["application_instance"].set_result(True)
    server._to_reap.add(closing)  # what the application's done callback does
    server.application_checker()
    assert set(server.connections) == {live} and not server._to_reap


async def test_reaper_keeps_running_after_one_connection_fails_to_reap(monkeypatch, caplog):
    """An error while reaping one connection is logged, the others are still reaped,
    and the next run is scheduled: one bad connection does not end the reaper."""
    import daphne.server
    from wsworker.server import WorkerServer

    scheduled = []
    monkeypatch.setattr(daphne.server.reactor, "callLater", lambda delay, fn, *a, **k: scheduled.append(fn))
    server = WorkerServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    done = asyncio.get_running_loop().create_future()
    done.set_result(True)
    bad, gone = object(), object()
    server.connections = {bad: {"application_instance": done, "disconnected": "not a time"},
                          gone: {"application_instance": done, "disconnected": time.time()}}
    server._to_reap = {bad, gone}
    server.application_checker()
    assert scheduled == [server.application_checker], "the next run is scheduled"
    assert gone not in server.connections, "the other connection is still reaped"
    assert "reaping a finished connection failed" in caplog.text


async def test_timeout_sweep_goes_on_past_a_connection_whose_check_fails(monkeypatch, caplog):
    """The 2-second sweep (timeouts, keepalive pings) logs a connection whose check
    raises, still checks the others and schedules its next run."""
    import daphne.server
    from wsworker.server import WorkerServer

    scheduled = []
    monkeypatch.setattr(daphne.server.reactor, "callLater", lambda delay, fn, *a, **k: scheduled.append(fn))
    server = WorkerServer(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    checked = []

    class Handshake:  # not an open WorkerWebSocketProtocol: daphne's own check_timeouts()
        def __init__(self, fails):
            self.fails = fails

        def check_timeouts(self):
            checked.append(self)
            if self.fails:
                raise RuntimeError("boom")

    bad, good = Handshake(True), Handshake(False)
    server.connections = {bad: {}, good: {}}
    server.timeout_checker()
    assert checked == [bad, good], "the connection after the failing one is still checked"
    assert scheduled == [server.timeout_checker], "the next sweep is scheduled"
    assert "timeout check of a connection failed" in caplog.text


def _loop_thread_sleeps(pid):
    """Times the worker's loop thread (the process's main thread) has blocked so far."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_wakes_about_once_a_second():
    """An idle worker (a socket open in a room, its metrics port on, nothing sent)
    runs its periodic chores (reaper, sweep, slow-client check, census, Redis
    watch, loop-lag metric, watchdog heartbeat, the room's pub/sub read) in one
    pass of its loop a second (wsworker.ticks), and Twisted's own access-log
    timers are off (wsworker.access). Before, its loop thread woke about nine
    times a second: seven phases of its own and Twisted's two log-date timers.
    Counted, not timed: the kernel's count of the thread's sleeps. At most five a
    second: the tick, up to three Redis replies (the watch's INFO, the census's
    write and read) not back within the same pass, and a keepalive pong or a
    Redis health check now and then (measured 3.2; before this change 7.5)."""
    port = free_port()
    proc = _start_worker(port, WS_METRICS_PORT=str(free_port()))
    try:
        async def scenario():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/idle/", open_timeout=5) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "chat.welcome"
                await asyncio.sleep(2.5)  # past the handshake's and the first chores' one-off timers
                before, started = _loop_thread_sleeps(proc.pid), time.monotonic()
                await asyncio.sleep(6)
                return (_loop_thread_sleeps(proc.pid) - before) / (time.monotonic() - started)

        per_second = asyncio.run(scenario())
    finally:
        _stop(proc)
    assert per_second <= 5, f"the idle worker's loop woke {per_second:.1f} times a second"


def _start_ws_script(port, **env_overrides):
    """services/bin/ws itself (as the image and the native runner start it), on loopback."""
    env = dict(os.environ, POSTGRES_DB=connection.settings_dict["NAME"], PORT=str(port), BIND_HOST="127.0.0.1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env_overrides)
    return subprocess.Popen([str(DJANGO_APP.parent / "services" / "bin" / "ws")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_socket_past_ws_max_age_seconds_is_closed_with_1012_in_the_last_tenth_of_its_age():
    """WS_MAX_AGE_SECONDS: the socket leaves with 1012 (reconnect at once, resume), not
    before 0.9 of the age and within the 2-second sweep after it; the worker says so."""
    max_age = 4
    port = free_port()
    proc = _start_ws_script(port, WS_MAX_AGE_SECONDS=str(max_age))
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20) == 200

        async def scenario():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/max-age/", open_timeout=5) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "chat.welcome"
                opened = time.monotonic()
                await asyncio.wait_for(ws.wait_closed(), max_age + 2 + 3)
                return ws.close_code, time.monotonic() - opened

        code, lived = asyncio.run(scenario())
        assert code == 1012
        assert lived >= max_age * 0.9 - 0.1, f"closed after {lived:.1f} s"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert "max age: closed 1 socket(s) open longer than WS_MAX_AGE_SECONDS=4 with 1012" in out


@pytest.mark.parametrize("value", ["abc", "-5", "1.5"])
def test_a_ws_max_age_that_is_not_whole_seconds_stops_the_worker_naming_the_setting(value):
    proc = _start_ws_script(free_port(), WS_MAX_AGE_SECONDS=value)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"WS_MAX_AGE_SECONDS must be a whole number of seconds (0: no limit), not '{value}'" in out
