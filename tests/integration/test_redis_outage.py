"""Readiness follows Redis: 503 while the channel layer is gone, 200 once it is back,
and rooms span workers again afterwards. Runs last in this directory (it restarts Redis)."""
import asyncio
import time

import requests
from websockets.exceptions import ConnectionClosed

from .wsclient import new_room, open_chat, recv_message, send_text

DEADLINE = 30.0


def wait_readyz(stack, status: int) -> requests.Response:
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(f"{stack.http_url}/readyz", timeout=5)
            if last.status_code == status:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"/readyz never returned {status} within {DEADLINE}s; last: "
                         f"{getattr(last, 'status_code', last)} {getattr(last, 'text', '')[:300]}")


async def cross_worker_delivery(stack, text: str) -> str | None:
    """None when a message crossed from worker 1 to worker 2, else what went wrong."""
    room = new_room("redis-back")
    url1, url2 = stack.ws_worker_urls
    opened = []
    try:
        a, _ = await open_chat(url1, room)
        opened.append(a)
        b, _ = await open_chat(url2, room)
        opened.append(b)
        await send_text(a, text)
        await recv_message(b, text, timeout=5)
        return None
    except (AssertionError, asyncio.TimeoutError, OSError, ConnectionClosed) as exc:
        return repr(exc)
    finally:
        for ws in opened:
            await ws.close()


async def test_readyz_turns_503_without_redis_and_recovers(native_stack):
    wait_readyz(native_stack, 200)
    native_stack.stop("redis")
    try:
        down = wait_readyz(native_stack, 503)
        body = down.json()
        assert body["checks"]["db"] == "ok"
        assert body["checks"]["redis"] != "ok"
    finally:
        native_stack.start("redis")
    assert wait_readyz(native_stack, 200).json()["checks"]["redis"] == "ok"

    # What users see: a room spans the workers again (their subscriptions reconnected).
    deadline = time.monotonic() + DEADLINE
    problems = []
    for attempt in range(10):
        problem = await cross_worker_delivery(native_stack, f"after redis restart {attempt}")
        if problem is None:
            break
        problems.append(problem)
        assert time.monotonic() < deadline, f"rooms never spanned workers again: {problems}"
        await asyncio.sleep(1)
    else:
        raise AssertionError(f"rooms never spanned workers again after Redis returned: {problems}")
