"""nginx overwrites X-Forwarded-For: a client cannot pose as another address.

daphne runs with --proxy-headers (it must, behind nginx), so it believes
whatever X-Forwarded-For reaches it. The app logs the client address when it
refuses an Origin; that log line is the observable proof.
"""
import time

import pytest
from websockets.exceptions import ConnectionClosed

from .wsclient import TIMEOUT, new_room, room_url
from websockets.asyncio.client import connect

SPOOFED = "6.6.6.6"
EVIL_ORIGIN = "http://evil.example"


async def refused_by_origin(base: str, room: str) -> int:
    """Connect with a foreign Origin and a spoofed X-Forwarded-For; return the close code."""
    async with connect(room_url(base, room), origin=EVIL_ORIGIN, open_timeout=TIMEOUT,
                       additional_headers={"X-Forwarded-For": SPOOFED}) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        return ws.close_code


def refusal_line(stack, room: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in range(1, stack.workers + 1):
            for line in stack.log_path("ws", i).read_text(errors="replace").splitlines():
                if "origin refused" in line and f"/ws/chat/{room}/" in line:
                    return line
        time.sleep(0.1)
    raise AssertionError(f"no 'origin refused' log line for room {room} after {timeout}s")


async def test_spoofed_forwarded_for_is_replaced_by_nginx(native_stack):
    room = new_room("xff")
    assert await refused_by_origin(native_stack.ws_base, room) == 4403
    line = refusal_line(native_stack, room)
    assert "client=127.0.0.1:" in line
    assert SPOOFED not in line


async def test_worker_trusts_forwarded_for_so_only_nginx_may_reach_it(native_stack):
    """Control: the same request straight to a worker IS believed, which is why the
    workers listen on loopback/the private network and nginx must overwrite it."""
    room = new_room("xff-direct")
    assert await refused_by_origin(native_stack.ws_worker_urls[0], room) == 4403
    assert f"client={SPOOFED}:" in refusal_line(native_stack, room)
