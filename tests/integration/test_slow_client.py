"""A client that stops reading is shed visibly and never stalls its room.

The stuck client is a raw TCP socket with a tiny receive window that completes
the WebSocket handshake and then never reads again, so the room's traffic piles
up in the daphne worker's send buffer. The worker must close it (1013, logged,
counted on /healthz) once WS_MAX_SEND_BUFFER_BYTES is exceeded, while a healthy
client in the same room keeps receiving every message in order.
"""
import asyncio
import json
import socket
import time

import pytest
import requests
import websockets

from tests.rawws import upgrade
from tests.stack import NativeStack

LIMIT = 128 * 1024
MESSAGE = "x" * 1900
MAX_MESSAGES = 4000  # ~7.6 MB of room traffic: far above LIMIT plus kernel buffers
DEADLINE = 90.0
BATCH = 100


@pytest.fixture(scope="module")
def stack():
    env = {
        "WS_MAX_SEND_BUFFER_BYTES": str(LIMIT),
        # One publisher sends far faster than the human-sized default allows.
        "CHAT_RATE_PER_SEC": "100000", "CHAT_RATE_BURST": "100000",
    }
    with NativeStack(workers=1, env=env) as s:
        yield s


def stuck_client(ws_url: str, path: str) -> socket.socket:
    """Handshake by hand, then never read: the kernel window stays tiny and full."""
    host, port = ws_url.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    upgrade(sock, host, int(port), path)
    return sock


def healthz(stack) -> dict:
    url = stack.ws_worker_urls[0].replace("ws://", "http://") + "/healthz"
    return requests.get(url, timeout=5).json()


async def _shed_seen(stack) -> bool:
    return any("slow consumer" in k for k in (await asyncio.to_thread(healthz, stack))["refusals"])


async def test_stuck_client_is_shed_and_the_room_keeps_flowing(stack):
    worker = stack.ws_worker_urls[0]
    room_path = "/ws/chat/slowpoke/"
    stuck = stuck_client(worker, room_path)
    watcher = await websockets.connect(worker + room_path, max_size=None)
    publisher = await websockets.connect(worker + room_path, max_size=None)
    for ws in (watcher, publisher):
        assert json.loads(await ws.recv())["type"] == "chat.welcome"

    received, sent = [], 0

    async def watch():
        async for raw in watcher:
            frame = json.loads(raw)
            if frame["type"] == "chat.message":
                received.append(frame["id"])

    async def drain_publisher_echoes():
        async for _ in publisher:
            pass

    tasks = [asyncio.create_task(watch()), asyncio.create_task(drain_publisher_echoes())]
    start = time.monotonic()
    shed = False
    try:
        while sent < MAX_MESSAGES and time.monotonic() - start < DEADLINE:
            # In batches the worker has really fanned out (the healthy client got
            # them), so the stuck socket's backlog is real, not queued client-side.
            for _ in range(BATCH):
                await publisher.send(json.dumps({"message": MESSAGE}))
            sent += BATCH
            batch_deadline = time.monotonic() + 15
            while len(received) < sent and time.monotonic() < batch_deadline:
                await asyncio.sleep(0.01)
            assert len(received) == sent, f"room stalled: healthy client has {len(received)} of {sent}"
            shed = await _shed_seen(stack)
            if shed:
                break
        # The worker looks at send buffers once a second (wsworker.shedding): when the
        # kernel's own buffers took most of the traffic, the backlog may have passed the
        # limit only in the last batches, after the last look.
        look_until = time.monotonic() + 5
        while not shed and time.monotonic() < look_until:
            await asyncio.sleep(0.2)
            shed = await _shed_seen(stack)
        assert shed, f"no slow-consumer shed after {sent} messages of {len(MESSAGE)} chars"
        # The healthy client still gets every message, in order, with no gap.
        deadline = time.monotonic() + 30
        while len(received) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert received == list(range(1, sent + 1))
    finally:
        for task in tasks:
            task.cancel()
        await watcher.close()
        await publisher.close()

    # The operator sees why: a log line and the counter; the stuck socket is gone.
    log = stack.log_path("ws", 1).read_text()
    assert "shed slow client" in log and "WS_MAX_SEND_BUFFER_BYTES" in log
    assert _closed_by_server(stuck), ("the stuck socket was never closed by the worker; its log ends:\n"
                                      + stack.log_path("ws", 1).read_text()[-3000:])
    stuck.close()
    deadline = time.monotonic() + 10
    while healthz(stack)["sockets"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert healthz(stack)["sockets"] == 0


def _closed_by_server(sock: socket.socket) -> bool:
    """Read what is queued until EOF or reset: a shed socket ends, bounded by a deadline."""
    # What the worker wrote before the shed (megabytes) drains through the tiny window
    # this socket was opened with; a larger buffer now lets it drain at loopback pace.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            continue
    return False
