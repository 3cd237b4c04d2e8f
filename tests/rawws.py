"""A WebSocket opened by hand on a plain socket, for tests that must control every
byte (frames split across writes, a client that never reads)."""
import base64
import os
import socket


def upgrade(sock: socket.socket, host: str, port: int, path: str) -> None:
    """Send the opening handshake and read the 101 answer, and not one byte more."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
