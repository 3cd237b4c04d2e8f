"""A minimal chat client for the compose tests, speaking docs/architecture.md's protocol.

It only does what a user's browser would: connect through nginx, read the
welcome frame (which names the ws replica that took the socket), send, and
collect chat.message frames. Every wait has a deadline.
"""
from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


class Client:
    def __init__(self, url: str, ssl=None, **connect_kwargs):
        self.url = url
        # wss://: an SSLContext trusting the test CA (and e.g. server_hostname=...).
        self.connect_kwargs = ({"ssl": ssl} if ssl is not None else {}) | connect_kwargs
        self.ws = None
        self.welcome: dict = {}
        self.messages: list[dict] = []

    @property
    def worker_host(self) -> str:
        """'hostname:pid' -> hostname, which is the container's hostname."""
        return self.welcome["worker"].rsplit(":", 1)[0]

    @property
    def last_id(self) -> int:
        ids = [m["id"] for m in self.messages] + [self.welcome.get("last_id", 0)]
        return max(ids)

    async def open(self, timeout: float = 10) -> "Client":
        self.ws = await asyncio.wait_for(connect(self.url, open_timeout=timeout, **self.connect_kwargs), timeout)
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        assert frame.get("type") == "chat.welcome", frame
        self.welcome = frame
        self.messages.extend(frame.get("history", []))
        return self

    async def send(self, text: str) -> None:
        await self.ws.send(json.dumps({"message": text}))

    async def wait_messages(self, texts: set[str], timeout: float = 10) -> list[dict]:
        """Read frames until every text in `texts` arrived as a chat.message."""
        deadline = time.monotonic() + timeout
        while not texts <= {m["message"] for m in self.messages}:
            left = deadline - time.monotonic()
            if left <= 0:
                got = [m["message"] for m in self.messages]
                raise AssertionError(f"{self.url}: still missing {texts - set(got)} after {timeout}s; got {got}")
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if frame.get("type") == "chat.message":
                self.messages.append(frame)
        return self.messages

    async def wait_closed(self, timeout: float) -> int | None:
        """Drain frames until the server closes the socket; returns the close code."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), deadline - time.monotonic()))
                if frame.get("type") == "chat.message":
                    self.messages.append(frame)
        except ConnectionClosed:
            return self.ws.close_code
        raise AssertionError(f"socket on {self.welcome.get('worker')} still open after {timeout}s")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
