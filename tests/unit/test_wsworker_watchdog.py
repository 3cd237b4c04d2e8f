"""A worker whose event loop is blocked exits (so its supervisor restarts it); a worker
that is merely paused (SIGSTOP) survives. Real worker processes (tests/unit/ownproject)."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import websockets

from .conftest import free_port
from .test_wsworker_own_project import DJANGO_APP, HERE, _get, _wait_http

pytestmark = pytest.mark.slow
STALL = 2.0


@pytest.fixture
def stall_worker():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DJANGO_SETTINGS_MODULE="ownproject.settings", WS_LOOP_STALL_SECONDS=str(STALL),
               PYTHONPATH=os.pathsep.join([str(HERE), str(DJANGO_APP)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsworker", "-b", "127.0.0.1", "-p", str(port), "ownproject.asgi:application"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)
        yield proc, port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=5)


def test_blocked_loop_fails_liveness_then_the_worker_exits_with_the_stack(stall_worker):
    proc, port = stall_worker

    async def block():
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/", open_timeout=5) as ws:
            await ws.send("block-loop:30")

    asyncio.run(block())
    started = time.monotonic()
    # The liveness probe (answered from the loop, 2 s timeout) times out once the loop is blocked.
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, "/healthz kept answering from a blocked loop"
        try:
            _get(f"http://127.0.0.1:{port}/healthz")
        except OSError:
            break
        time.sleep(0.05)
    code = proc.wait(timeout=STALL + 10)
    took = time.monotonic() - started
    out = proc.stdout.read()
    assert code == 70, out[-2000:]
    assert took < STALL + 5, f"exited {took:.1f}s after the block"
    assert "event loop blocked" in out, out[-2000:]
    assert "in receive" in out and "time.sleep" in out, "the stack of the blocked loop names the blocking frame"


def test_a_paused_worker_is_not_a_blocked_loop(stall_worker):
    proc, port = stall_worker
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(STALL * 2.5)  # the fault itself: a pause longer than the stall limit
    os.kill(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + STALL * 2
    while time.monotonic() < deadline:  # alive and answering for 2 stall periods after the thaw
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        time.sleep(0.2)
