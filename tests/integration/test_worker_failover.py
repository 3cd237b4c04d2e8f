"""nginx skips a dead daphne worker (proxy_next_upstream): new sockets still open,
on the surviving worker, and the stopped worker rejoins the pool when restarted."""
import asyncio
import re
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


async def test_restarting_the_ws_tier_keeps_the_hung_worker_check(native_stack):
    """`scripts/local stop ws` + `start ws` (every worker, one command each) restarts
    the workers only: ws-check, which takes hung workers out of nginx's upstream, runs
    on, `status` names every process without an error, and both workers get new
    sockets again."""
    check = native_stack.pid("ws-check")
    assert check is not None
    before = {i: native_stack.pid("ws", i) for i in (1, 2)}
    native_stack.stop("ws")
    try:
        assert all(native_stack.pid("ws", i) is None for i in (1, 2))
        assert native_stack.pid("ws-check") == check, "stopping the workers stopped ws-check"
    finally:
        native_stack.start("ws")
    after = {i: native_stack.pid("ws", i) for i in (1, 2)}
    assert None not in after.values() and set(after.values()).isdisjoint(before.values())
    assert native_stack.pid("ws-check") == check
    status = native_stack.run_local("status")
    lines = {line.split()[0]: line for line in status.splitlines()}
    assert set(lines) == {"db", "redis", "web", "ws-1", "ws-2", "nginx", "ws-check"}, status
    assert all(" running " in line for line in lines.values()), status
    # ws-check saw the workers go and come back: once each is marked back up (its
    # RISE probes), nginx sends new sockets to both restarted workers again.
    deadline = time.monotonic() + REJOIN_DEADLINE
    while not _upstream_settled(native_stack):
        assert time.monotonic() < deadline, "ws-check never marked the restarted workers back up"
        await asyncio.sleep(0.1)
    room, seen = new_room("tier-restart"), set()
    while seen != {str(pid) for pid in after.values()}:
        assert time.monotonic() < deadline, f"after the restart new sockets reached only {seen}"
        ws, welcome = await open_chat(native_stack.ws_base, room)
        await ws.close()
        seen.add(welcome["worker"].split(":")[-1])
        await asyncio.sleep(0.1)


def _upstream_settled(stack) -> bool:
    """Every worker ws-check marked down has been marked back up since (its log)."""
    last = {}
    for line in stack.log_path("ws-check").read_text().splitlines():
        found = re.match(r"ws-upstream-check: (\S+) (marked down|back up)", line)
        if found:
            last[found[1]] = found[2]
    return all(state == "back up" for state in last.values())
