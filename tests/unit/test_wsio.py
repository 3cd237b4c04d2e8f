"""The per-socket pieces of our daphne server (wsworker.frames, wsworker.inbox): frames and the Inbox.

Frames are checked with the websockets library's own parser, i.e. as a client
reads them; the Inbox is checked for the orders of events daphne can produce.
"""
import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from wsworker.frames import frame_text
from wsworker.inbox import Inbox


def parse_frames(data: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frame_text_is_one_text_frame_a_client_reads_back(length):
    # every length encoding of RFC 6455 (7-bit, 16-bit, 64-bit), with non-ASCII text
    text = ("é" * length)[:length]
    (frame,) = parse_frames(frame_text(text))
    assert frame.opcode == Opcode.TEXT and frame.fin
    assert frame.data.decode("utf-8") == text


def test_joined_frames_read_back_in_order():
    texts = [f'{{"id": {i}}}' for i in range(50)]
    frames = parse_frames(b"".join(frame_text(t) for t in texts))
    assert [f.data.decode() for f in frames] == texts


async def test_inbox_hands_events_over_in_order():
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await inbox.get() == 1
    waiting = asyncio.ensure_future(inbox.get())
    assert await waiting == 2
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)  # the reader is now parked on the Inbox
    inbox.put_nowait(3)
    inbox.put_nowait(4)  # arrives before the reader runs: must wait its turn
    assert await waiting == 3
    assert await inbox.get() == 4


async def test_inbox_keeps_an_event_that_arrives_as_its_reader_is_cancelled():
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("disconnect")
    reader.cancel()  # e.g. daphne cancelling the app while the event is in flight
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await asyncio.wait_for(inbox.get(), 1) == "disconnect"


async def test_inbox_reader_cancelled_while_idle_leaves_it_usable():
    inbox = Inbox()
    reader = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait("next")
    assert await asyncio.wait_for(inbox.get(), 1) == "next"


async def test_inbox_refuses_a_second_reader():
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="single reader"):
        await inbox.get()
    inbox.put_nowait("x")
    assert await first == "x"


def _twisted_connection():
    """A Twisted TCP connection over a real socket pair, without running the reactor."""
    import socket

    from twisted.internet import protocol as tx_protocol, reactor, tcp

    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = tcp.Connection(ours, tx_protocol.Protocol(), reactor)
    conn.connected = 1
    return conn, peer


def _drain(peer) -> bytes:
    out = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


class _CountingSocket:
    """A socket that records which connection each send() came from."""

    def __init__(self, sock, conn, sends):
        self._sock, self._conn, self._sends = sock, conn, sends

    def send(self, data):
        self._sends.append(self._conn)
        return self._sock.send(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


async def test_write_soon_sends_each_socket_once_per_loop_pass_in_order():
    """Frames written to idle sockets in one pass leave in one send() per socket,
    on the next pass, without the reactor registering anything; order is kept."""
    from twisted.internet import reactor

    from wsworker.protocol import unsent_bytes, write_soon

    (a, peer_a), (b, peer_b) = _twisted_connection(), _twisted_connection()
    sends = []
    for conn in (a, b):
        conn.socket = _CountingSocket(conn.socket, conn, sends)
    try:
        write_soon(a, b"one ")
        write_soon(b, b"other")
        write_soon(a, b"two")
        assert _drain(peer_a) == b"" and unsent_bytes(a) == 7  # nothing sent during the pass
        await asyncio.sleep(0)  # the next pass runs the flush
        assert _drain(peer_a) == b"one two" and _drain(peer_b) == b"other"
        assert sorted(map(id, sends)) == sorted([id(a), id(b)]), "one send per socket"
        assert a not in reactor.getWriters() and not unsent_bytes(a)
    finally:
        for conn, peer in ((a, peer_a), (b, peer_b)):
            conn.stopWriting()
            conn.socket.close()
            peer.close()


async def test_a_write_through_twisted_between_queued_frames_keeps_its_place():
    """autobahn writes pings and close frames with transport.write(); one made while
    frames wait for the flush leaves between them, in the order written."""
    from twisted.internet import reactor

    from wsworker.protocol import unsent_bytes, write_soon

    conn, peer = _twisted_connection()
    try:
        write_soon(conn, b"one ")
        conn.write(b"ping ")  # registers for writability, like autobahn's sendData
        write_soon(conn, b"two")
        await asyncio.sleep(0)
        assert _drain(peer) == b"one ping two" and not unsent_bytes(conn)
        assert conn.doWrite() is None and conn not in reactor.getWriters(), "nothing left for the reactor"
    finally:
        conn.stopWriting()
        conn.socket.close()
        peer.close()


async def test_write_soon_leaves_what_the_kernel_refuses_to_the_reactor_and_queues_behind_it():
    from twisted.internet import reactor

    from wsworker.protocol import unsent_bytes, write_soon

    conn, peer = _twisted_connection()
    try:
        big = bytes(range(256)) * 4096
        write_soon(conn, big)
        await asyncio.sleep(0)
        assert unsent_bytes(conn) > 0 and conn in reactor.getWriters(), "the rest waits for writability"
        write_soon(conn, b"last")  # behind the backlog, never ahead
        received = _drain(peer)
        while unsent_bytes(conn):
            conn.doWrite()
            received += _drain(peer)
        assert received == big + b"last"
    finally:
        conn.stopWriting()
        conn.socket.close()
        peer.close()


def test_write_soon_leaves_a_closing_transport_to_twisted():
    from wsworker.protocol import _queued, write_soon

    conn, peer = _twisted_connection()
    try:
        conn.disconnecting = 1
        write_soon(conn, b"late")
        assert conn not in _queued and _drain(peer) == b""  # Twisted's own path, behind its close
    finally:
        conn.stopWriting()
        conn.socket.close()
        peer.close()


async def test_write_soon_to_a_dead_peer_leaves_the_loss_for_the_reactor_to_report():
    """send() failing (the client vanished) must not raise in the flush, lose the other
    sockets' writes, or go unnoticed: Twisted's doWrite path reports the loss."""
    from twisted.internet import main, reactor

    from wsworker.protocol import write_soon

    (dead, peer_dead), (alive, peer_alive) = _twisted_connection(), _twisted_connection()
    peer_dead.close()
    try:
        write_soon(dead, b"to nobody")
        write_soon(alive, b"to someone")
        await asyncio.sleep(0)
        assert _drain(peer_alive) == b"to someone"
        assert dead in reactor.getWriters(), "the reactor's next doWrite reports the loss"
        assert dead.doWrite() is main.CONNECTION_LOST
    finally:
        for conn in (dead, alive):
            conn.stopWriting()
            conn.socket.close()
        peer_alive.close()
