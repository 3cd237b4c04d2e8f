"""Tiny helpers over the `websockets` client for the documented chat protocol.

Every wait has a deadline: a missing frame fails the test with what did arrive
instead of hanging the run.
"""
import asyncio
import json
import time
import uuid

from websockets.asyncio.client import connect

TIMEOUT = 10.0


def new_room(prefix: str = "it") -> str:
    """A room no other test (or earlier run against the same DB) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def room_url(base: str, room: str, query: str = "") -> str:
    return f"{base}/ws/chat/{room}/" + (f"?{query}" if query else "")


async def open_chat(base: str, room: str, **kwargs):
    """Connect and read the welcome frame; returns (socket, welcome dict)."""
    ws = await connect(room_url(base, room), open_timeout=TIMEOUT, **kwargs)
    welcome = await recv_json(ws)
    assert welcome["type"] == "chat.welcome", welcome
    assert welcome["room"] == room
    return ws, welcome


async def recv_json(ws, timeout: float = TIMEOUT) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_message(ws, text: str, timeout: float = TIMEOUT) -> dict:
    """The chat.message carrying `text`; frames before it are collected for the error."""
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await recv_json(ws, left)
        except asyncio.TimeoutError:
            break
        if frame.get("type") == "chat.message" and frame.get("message") == text:
            return frame
        seen.append(frame)
    raise AssertionError(f"no chat.message {text!r} within {timeout}s; got {seen}")


async def send_text(ws, text: str) -> None:
    await ws.send(json.dumps({"message": text}))
