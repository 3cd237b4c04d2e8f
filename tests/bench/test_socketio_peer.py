"""The Socket.IO peer is what the bench says it is: Socket.IO's own protocol,
rooms spanning Node processes through the Redis adapter, installed from the lock.

Real servers (Redis, 2 Node processes, nginx), driven by the bench's own
Engine.IO/Socket.IO framing (bench/dialects.py) over `websockets`.
"""
import asyncio

import pytest
from websockets.asyncio.client import connect

from bench.dialects import SocketIO
from bench.socketio_stack import SocketIOStack, ensure_installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peer():
    with SocketIOStack(workers=2) as stack:
        yield stack


def test_npm_ci_is_cached(peer):
    assert ensure_installed() is False, "a second install with an unchanged lock file must be a no-op"


async def _join(url, room):
    ws = await connect(url + SocketIO.path(room), compression=None, open_timeout=10)
    worker = await asyncio.wait_for(SocketIO.hello(ws, ws.recv), 10)
    return ws, worker


async def _next_text(ws):
    while True:
        raw = await asyncio.wait_for(ws.recv(), 10)
        if raw == SocketIO.ping:
            await ws.send(SocketIO.pong)
        elif SocketIO.text_of(raw):
            return SocketIO.text_of(raw)


def test_engine_io_open_packet(peer):
    async def go():
        async with connect(peer.ws_worker_urls[0] + SocketIO.path("r1"), open_timeout=10) as ws:
            first = await asyncio.wait_for(ws.recv(), 10)
            assert first.startswith('0{"sid":') and '"pingInterval"' in first
            await ws.send("40")
            assert (await asyncio.wait_for(ws.recv(), 10)).startswith('40{"sid":')
    asyncio.run(go())


def test_room_broadcast_crosses_node_processes(peer):
    async def go():
        a, wa = await _join(peer.ws_worker_urls[0], "room1")
        b, wb = await _join(peer.ws_worker_urls[1], "room1")
        other, _ = await _join(peer.ws_worker_urls[1], "room2")
        assert wa != wb, "the two sockets should be on different Node processes"
        await a.send(SocketIO.encode("hello"))
        assert await _next_text(b) == "hello"  # through the Redis adapter
        assert await _next_text(a) == "hello"  # io.to(room) includes the sender, like our group send
        await other.send(SocketIO.encode("elsewhere"))
        assert await _next_text(other) == "elsewhere"
        await a.send(SocketIO.encode("again"))
        assert await _next_text(b) == "again", "room2's message must not reach room1"
        for ws in (a, b, other):
            await ws.close()
    asyncio.run(go())


def test_bad_room_is_refused(peer):
    async def go():
        async with connect(peer.ws_base + SocketIO.path("bad%20room"), open_timeout=10) as ws:
            with pytest.raises(Exception):
                await asyncio.wait_for(SocketIO.hello(ws, ws.recv), 10)
    asyncio.run(go())
