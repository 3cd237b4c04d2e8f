"""Idle-capacity client role (`Proc("idle")`): connect storms and idle sockets held.

Split from bench/client.py (the fan-out roles) so each file keeps one job; it
shares that module's connect helper and controller pipe.
"""
import asyncio
import time
from collections import Counter

import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Origin
from websockets.uri import parse_uri

from bench.client import CONNECT_TIMEOUT, ORIGIN, _Cmd, _failure, _open


class _Handshake(asyncio.Protocol):
    """One connect for the connects/s figure: websockets' sans-I/O ClientProtocol
    builds the request, checks the 101 and Sec-WebSocket-Accept and parses the
    welcome frame, without the asyncio client's per-connection tasks and buffers.
    The full client costs more CPU per handshake than the server does, so with it
    the figure measured the load generator, not the stack."""

    def __init__(self, url, done):
        self.ws = ClientProtocol(parse_uri(url), origin=Origin(ORIGIN))
        self.done = done
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self):
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data):
        self.ws.receive_data(data)
        self._flush()  # e.g. a pong for the server's keepalive ping
        if self.done.done():
            return
        if self.ws.handshake_exc is not None:
            self.done.set_exception(self.ws.handshake_exc)
            return
        for event in self.ws.events_received():
            if isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                self.done.set_result(event.data)
                return

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the welcome frame: {exc}"))

    def close(self):
        if self.transport is not None and not self.transport.is_closing():
            if self.ws.state is State.OPEN:  # a refused handshake (e.g. HTTP 500) has no close handshake
                self.ws.send_close(1000)
                self._flush()
            self.transport.close()


async def _handshake(url):
    """Connect through the sans-I/O client and wait for the welcome frame."""
    uri = parse_uri(url)
    done = asyncio.get_running_loop().create_future()
    _transport, proto = await asyncio.wait_for(
        asyncio.get_running_loop().create_connection(lambda: _Handshake(url, done), uri.host, uri.port),
        CONNECT_TIMEOUT)
    try:
        await asyncio.wait_for(done, CONNECT_TIMEOUT)
    except BaseException:
        proto.close()
        raise
    return proto


async def idle_main(conn):
    """Opens many idle sockets as fast as allowed; timing is measured here, not in the controller."""
    cmd, held, handshakes = _Cmd(conn), [], []
    while True:
        msg = await cmd.next()
        op = msg["op"]
        if op == "open":
            sem = asyncio.Semaphore(msg.get("concurrency", 100))
            fails = Counter()
            deadline = time.monotonic() + msg.get("deadline_s", 120)

            async def one(url):
                async with sem:
                    if time.monotonic() > deadline:
                        fails["deadline"] += 1
                        return
                    try:
                        if msg.get("light"):
                            handshakes.append(await _handshake(url))
                        else:
                            ws, _w = await _open(url)
                            held.append(ws)
                    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                            websockets.ConnectionClosed) as exc:
                        fails[_failure(exc)] += 1

            t0 = time.monotonic()
            before = len(held) + len(handshakes)
            # "start": where this process begins in the URL list, so processes given the
            # same list can open distinct URLs (one socket per room per worker).
            start = msg.get("start", 0)
            urls = msg["urls"]
            await asyncio.gather(*(one(urls[(start + i) % len(urls)]) for i in range(msg["n"])))
            cmd.reply({"opened": len(held) + len(handshakes) - before, "elapsed": time.monotonic() - t0,
                       "failures": dict(fails)})
        elif op == "alive":
            cmd.reply(sum(1 for ws in held if ws.close_code is None))
        elif op in ("close_all", "exit"):
            for proto in handshakes:
                proto.close()
            handshakes.clear()
            await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
            held.clear()
            cmd.reply(True)
            if op == "exit":
                return
