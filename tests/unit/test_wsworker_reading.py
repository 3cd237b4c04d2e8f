"""Reading client frames (wsworker.reading): the fast path takes only the frames it may,
and a real worker still answers every other frame as autobahn always did.

Client frames are built with the websockets library's own serializer (masked, as a
client sends them), so the parser is checked against another implementation.
"""
import json
import socket
import struct
import time

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from tests.rawws import upgrade
from wsworker.reading import pong_payload, split_text_frames

from .conftest import free_port
from .test_wsworker import _start_worker, _stop


def client_frame(opcode=Opcode.TEXT, data=b"", fin=True) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def text(s: str) -> bytes:
    return client_frame(Opcode.TEXT, s)


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 125, 126, 127, 1000, 65535])
def test_a_client_text_frame_reads_back_as_sent(length):
    body = ("é" * length).encode("utf-8")[:length]
    body = body.decode("utf-8", "ignore").encode("utf-8")  # whole characters only
    texts, used = split_text_frames(client_frame(Opcode.TEXT, body), 0)
    assert texts == [body] and used == len(client_frame(Opcode.TEXT, body))


def test_many_frames_in_one_read_come_back_in_order():
    bodies = [f'{{"message": "m{i}", "client_msg_id": "c{i}"}}'.encode() for i in range(200)]
    data = b"".join(client_frame(Opcode.TEXT, b) for b in bodies)
    assert split_text_frames(data, 65536) == (bodies, len(data))


def _unmasked(body: bytes) -> bytes:
    return Frame(Opcode.TEXT, body).serialize(mask=False)


def _rsv1(frame: bytes) -> bytes:
    """The RSV1 bit set (permessage-deflate's, never negotiated here)."""
    return bytes([frame[0] | 0x40]) + frame[1:]


def _non_minimal_length(body: bytes) -> bytes:
    """A 5-byte payload announced with the 16-bit length form (RFC 6455 forbids it)."""
    return bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(body)) + b"\0\0\0\0" + body


# Every frame the fast path must leave to autobahn, and why autobahn wants it.
LEFT_TO_AUTOBAHN = {
    "ping (pong)": client_frame(Opcode.PING, b"p"),
    "close (close handshake)": client_frame(Opcode.CLOSE, Close(1000, "bye").serialize()),
    "binary (the app's binary reply)": client_frame(Opcode.BINARY, b"\x00\x01"),
    "first fragment (reassembly)": client_frame(Opcode.TEXT, b"part", fin=False),
    "continuation outside a message (1002)": client_frame(Opcode.CONT, b"x"),
    "unmasked (1002)": _unmasked(b"hello"),
    "RSV1 without an extension (1002)": _rsv1(client_frame(Opcode.TEXT, b"x")),
    "non-minimal length (1002)": _non_minimal_length(b"hello"),
    "64-bit length": client_frame(Opcode.TEXT, b"x" * 65536),
    "over the limit (1009)": client_frame(Opcode.TEXT, b"x" * 1001),
    "invalid UTF-8 (1007)": client_frame(Opcode.TEXT, b"\xff\xfe"),
    "UTF-8 encoded surrogate (1007)": client_frame(Opcode.TEXT, b"\xed\xa0\x80"),
    "truncated UTF-8 (1007)": client_frame(Opcode.TEXT, "é".encode()[:1]),
}


@pytest.mark.parametrize("frame", LEFT_TO_AUTOBAHN.values(), ids=LEFT_TO_AUTOBAHN.keys())
def test_reading_stops_at_the_first_frame_autobahn_must_answer(frame):
    first, after = text("before"), text("after")
    assert split_text_frames(first + frame + after, 1000) == ([b"before"], len(first))
    assert split_text_frames(frame + after, 1000) == ([], 0)


def test_a_partial_frame_is_left_for_the_next_read():
    data = text("one") + text("two" * 50)
    ends = {len(text("one")), len(data)}
    for cut in range(len(data) + 1):
        texts, used = split_text_frames(data[:cut], 0)
        assert used == max(e for e in ends | {0} if e <= cut)
        assert texts == [b"one", b"two" * 50][:[0, len(text("one")), len(data)].index(used)]


@pytest.mark.parametrize("length", [0, 1, 12, 125])
def test_a_whole_pong_reads_back_its_payload(length):
    body = bytes(range(length))
    assert pong_payload(client_frame(Opcode.PONG, body)) == body


NOT_ONE_PONG = {
    "partial": client_frame(Opcode.PONG, b"x" * 12)[:-1],
    "pong then a message": client_frame(Opcode.PONG, b"x" * 12) + text("hi"),
    "unmasked (1002)": Frame(Opcode.PONG, b"x" * 12).serialize(mask=False),
    "not final (1002)": bytes([0x0A]) + client_frame(Opcode.PONG, b"x")[1:],
    "RSV1 (1002)": _rsv1(client_frame(Opcode.PONG, b"x")),
    "ping": client_frame(Opcode.PING, b"x" * 12),
    "text": text("x" * 12),
}


@pytest.mark.parametrize("data", NOT_ONE_PONG.values(), ids=NOT_ONE_PONG.keys())
def test_anything_but_one_whole_pong_is_left_to_autobahn(data):
    assert pong_payload(data) is None


# --- the real worker: autobahn still answers what the fast path leaves to it ------------


def _handshake(port: int, path: str) -> "ServerFrames":
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    upgrade(sock, "127.0.0.1", port, path)
    return ServerFrames(sock, b"")


class ServerFrames:
    """Frames the server sends on a raw socket, parsed by the websockets library."""

    def __init__(self, sock, leftover: bytes):
        self.sock, self.reader, self.parser = sock, StreamReader(), None
        self.reader.feed_data(leftover)

    def next(self, deadline: float) -> Frame:
        while True:
            self.parser = self.parser or Frame.parse(self.reader.read_exact, mask=False)
            try:
                next(self.parser)
            except StopIteration as done:
                self.parser = None
                return done.value
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed without a close frame")
            self.reader.feed_data(chunk)

    def until(self, last_message: str | None, timeout: float = 10) -> tuple[list, list, int | None]:
        """(chat messages, pong payloads, close code): read until `last_message` is
        echoed, or with None until the server's close frame."""
        deadline = time.monotonic() + timeout
        messages, pongs = [], []
        while time.monotonic() < deadline:
            frame = self.next(deadline)
            if frame.opcode == Opcode.CLOSE:
                return messages, pongs, Close.parse(frame.data).code
            if frame.opcode == Opcode.PONG:
                pongs.append(frame.data)
            elif frame.opcode == Opcode.TEXT:
                event = json.loads(frame.data)
                if event["type"] == "chat.message":
                    messages.append(event["message"])
                    if event["message"] == last_message:
                        return messages, pongs, None
        raise AssertionError(f"not done within {timeout} s; got {messages} {pongs}")


def _chat(message: str) -> bytes:
    return text(json.dumps({"message": message}))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_worker_reads_fast_frames_and_autobahns_frames_in_order():
    """Split reads, a ping between messages, a fragmented message: every message is
    stored in the order sent, the ping is answered, and the socket still closes 1007
    on invalid UTF-8 and 1009 past the frame limit (services/bin/ws passes
    WS_MAX_MESSAGE_BYTES as these options)."""
    port = free_port()
    proc = _start_worker(port, "--websocket-max-message-size", "2000", "--websocket-max-frame-size", "2000",
                         CHAT_RATE_PER_SEC="1000", CHAT_RATE_BURST="1000")
    try:
        frames = _handshake(port, "/ws/chat/reading/")
        sock = frames.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert json.loads(frames.next(time.monotonic() + 5).data)["type"] == "chat.welcome"
        m3 = _chat("m3")
        writes = [
            _chat("m1") + _chat("m2") + m3[:5],  # fast path: m1, m2; autobahn: the start of m3
            m3[5:] + _chat("m4"),  # autobahn (it holds part of a frame): m3, m4
            _chat("m5") + client_frame(Opcode.PING, b"are you there") + _chat("m6")
            + client_frame(Opcode.TEXT, b'{"message": ', fin=False),  # fast: m5; autobahn: the rest
            client_frame(Opcode.CONT, b'"m7"}') + _chat("m8"),  # autobahn: inside a fragmented message
            _chat("m9") + _chat("m10"),  # fast path again
        ]
        for data in writes:
            sock.sendall(data)
            time.sleep(0.05)  # lets the worker read each write on its own; nothing waits on it
        messages, pongs, _ = frames.until("m10")
        assert messages == [f"m{i}" for i in range(1, 11)] and pongs == [b"are you there"]
        sock.sendall(client_frame(Opcode.TEXT, b'{"message": "\xff"}'))
        assert frames.until(None)[2] == 1007
        sock.close()

        frames = _handshake(port, "/ws/chat/reading/")
        sock = frames.sock
        sock.sendall(_chat("m7"))
        assert frames.until("m7")[0] == ["m7"]
        sock.sendall(client_frame(Opcode.TEXT, json.dumps({"message": "x" * 2100})))
        assert frames.until(None)[2] == 1009
        sock.close()
    finally:
        _stop(proc)
