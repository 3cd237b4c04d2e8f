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


def test_write_through_sends_to_an_idle_socket_at_once_and_queues_behind_a_backlog():
    from wsworker.protocol import unsent_bytes, write_through

    conn, peer = _twisted_connection()
    try:
        # idle socket: the peer can read the bytes before the reactor ever runs
        write_through(conn, b"first")
        assert _drain(peer) == b"first" and unsent_bytes(conn) == 0
        # a write larger than the kernel takes: the rest waits in Twisted's buffer...
        big = bytes(range(256)) * 4096
        write_through(conn, big)
        assert unsent_bytes(conn) > 0
        # ...and a later write goes behind it, never ahead
        write_through(conn, b"last")
        received = _drain(peer)
        while unsent_bytes(conn):
            conn.doWrite()
            received += _drain(peer)
        assert received == big + b"last"
    finally:
        conn.stopWriting()
        conn.socket.close()
        peer.close()


def test_write_through_leaves_a_closing_transport_to_twisted():
    from wsworker.protocol import write_through

    conn, peer = _twisted_connection()
    try:
        conn.disconnecting = 1
        write_through(conn, b"late")
        assert _drain(peer) == b""  # not sent past a close Twisted is carrying out
    finally:
        conn.stopWriting()
        conn.socket.close()
        peer.close()
