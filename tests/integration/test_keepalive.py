"""Keepalive: a worker pings every idle socket and closes one that stops answering.

WS_PING_INTERVAL and WS_PING_TIMEOUT (.env.example) are what let the worker
find half-open connections (a laptop lid closed, a NAT that forgot the flow)
and what keep idle sockets alive through proxies. The client here is a raw
socket, so the test sees the ping frames themselves and decides whether to
answer.
"""
import os
import socket
import struct
import time

import pytest

from tests.rawws import upgrade
from tests.stack import NativeStack

INTERVAL, TIMEOUT = 1, 2
SWEEP = 2  # the worker looks at its sockets every 2 s (wsworker.server.timeout_checker)
PING, PONG, CLOSE = 0x9, 0xA, 0x8


@pytest.fixture(scope="module")
def stack():
    with NativeStack(workers=1, env={"WS_PING_INTERVAL": str(INTERVAL), "WS_PING_TIMEOUT": str(TIMEOUT)}) as s:
        yield s


def _open(stack, room: str) -> socket.socket:
    host, port = stack.ws_worker_urls[0].removeprefix("ws://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    upgrade(sock, host, int(port), f"/ws/chat/{room}/")
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = _recv_exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", _recv_exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack(">Q", _recv_exactly(sock, 8))
    return first & 0x0F, _recv_exactly(sock, length)


def _pong(sock: socket.socket, payload: bytes) -> None:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x80 | PONG, 0x80 | len(payload)]) + mask + masked)


def test_an_idle_socket_is_pinged_and_stays_open_while_it_answers(stack):
    sock = _open(stack, "keepalive-answers")
    try:
        pings, opened = 0, time.monotonic()
        # Answering every ping for several ping timeouts: pinged again and again, never closed.
        while time.monotonic() - opened < 3 * TIMEOUT + SWEEP:
            sock.settimeout(INTERVAL + 2 * SWEEP + 1)
            opcode, payload = _read_frame(sock)
            assert opcode != CLOSE, f"closed although every ping was answered: {payload!r}"
            if opcode == PING:
                pings += 1
                _pong(sock, payload)
        assert pings >= 2, f"{pings} ping(s) in {3 * TIMEOUT + SWEEP} s with WS_PING_INTERVAL={INTERVAL}"
    finally:
        sock.close()


def test_a_socket_that_stops_answering_pings_is_closed(stack):
    sock = _open(stack, "keepalive-silent")
    try:
        deadline = time.monotonic() + INTERVAL + SWEEP + TIMEOUT + 5
        saw_ping = False
        sock.settimeout(1)
        while time.monotonic() < deadline:
            try:
                opcode, _ = _read_frame(sock)
            except (EOFError, ConnectionResetError):
                break  # the worker dropped the connection
            except socket.timeout:
                continue
            saw_ping = saw_ping or opcode == PING
        else:
            pytest.fail(f"still open {INTERVAL + SWEEP + TIMEOUT + 5} s after connecting without answering a ping "
                        f"(WS_PING_INTERVAL={INTERVAL}, WS_PING_TIMEOUT={TIMEOUT})")
        assert saw_ping, "closed without a ping first"
    finally:
        sock.close()
