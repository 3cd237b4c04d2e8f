"""nginx skips a dead daphne worker (proxy_next_upstream): new sockets still open,
on the surviving worker, and the stopped worker rejoins the pool when restarted."""
import asyncio
import time

from .wsclient import new_room, open_chat

CONNECTS = 4
# nginx tries the next server when one refuses the connection (max_fails=0: none is parked).
REJOIN_DEADLINE = 20.0


async def test_new_sockets_avoid_a_stopped_worker(native_stack):
    room = new_room("failover")
    native_stack.stop("ws-1")
    try:
        assert native_stack.pid("ws", 1) is None
        workers = set()
        for _ in range(CONNECTS):
            ws, welcome = await open_chat(native_stack.ws_base, room)
            workers.add(welcome["worker"])
            await ws.close()
        assert workers == {welcome["worker"]}  # all on the one live worker
        assert welcome["worker"].endswith(f":{native_stack.pid('ws', 2)}")
    finally:
        native_stack.start("ws-1")
    restarted = native_stack.pid("ws", 1)
    assert restarted is not None

    # The restarted worker gets new sockets again (at once: nothing is parked).
    deadline = time.monotonic() + REJOIN_DEADLINE
    seen = set()
    for _ in range(200):
        ws, welcome = await open_chat(native_stack.ws_base, room)
        await ws.close()
        seen.add(welcome["worker"])
        if welcome["worker"].endswith(f":{restarted}"):
            break
        assert time.monotonic() < deadline, f"restarted ws-1 never got a socket; saw {seen}"
        await asyncio.sleep(0.25)
    else:
        raise AssertionError(f"restarted ws-1 never got a socket; saw {seen}")
