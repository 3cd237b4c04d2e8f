"""The Python client's policies against the real stack: resume, stop on a policy
close, bounded backoff. The fault tests rely on these, so they run first."""

from __future__ import annotations

import time
import uuid

from clients.chatclient import Backoff, ChatClient, State, room_url
from tests.stack import free_port


async def test_resume_returns_only_newer_ids_in_order(stack):
    room = f"resume-{uuid.uuid4().hex[:6]}"
    async with ChatClient(room_url(stack.ws_base, room), after=0) as writer:
        ids = [await writer.send(f"m{i}", timeout=10) for i in range(5)]
        assert ids == [1, 2, 3, 4, 5]
    async with ChatClient(room_url(stack.ws_base, room), after=2) as reader:
        await reader.wait_caught_up(5, timeout=10)
        assert reader.sequence == [3, 4, 5]
        assert [reader.messages[i]["message"] for i in reader.sequence] == ["m2", "m3", "m4"]
        assert reader.gaps == [] and reader.duplicates == 0


async def test_policy_close_stops_without_retrying(stack):
    client = ChatClient(room_url(stack.ws_base, "bad.room"), backoff=Backoff(base=0.05, cap=0.1, max_attempts=5))
    await client.start()
    try:
        await client.wait_for(lambda: client.state is State.STOPPED, timeout=10)
        assert client.close_codes and client.close_codes[-1] in (4400, 4404), client.close_codes
        assert len(client.close_codes) == 1, "a policy close must not be retried"
        assert "policy code" in (client.stop_reason or "")
    finally:
        await client.stop()


async def test_backoff_is_bounded_when_nothing_listens():
    port = free_port()  # nothing listens here: every attempt is refused
    backoff = Backoff(base=0.02, cap=0.1, max_attempts=6)
    client = ChatClient(room_url(f"ws://127.0.0.1:{port}", "lobby"), backoff=backoff, open_timeout=2)
    started = time.monotonic()
    await client.start()
    try:
        await client.wait_for(lambda: client.state is State.STOPPED, timeout=10)
        assert "gave up after 6 attempts" in client.stop_reason
        # full jitter never waits more than the cap per attempt
        assert time.monotonic() - started < backoff.max_attempts * (backoff.cap + 2)
    finally:
        await client.stop()
