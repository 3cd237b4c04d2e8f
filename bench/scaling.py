"""Scaling scenarios of `make bench` (issue 16): a reconnect storm and a rebalance.

Both run real ChatClients (reconnect, resume with ?after=) through nginx on the
product stack, with a few clients chatting throughout, and judge every client
against Postgres: lost and duplicated messages must be 0.

- storm: 3 workers, one holding half the sockets (5,000 of 10,000; rebalancing
  off so it keeps them), is drained (SIGTERM). Reported: time until every one of
  its sockets is open again, and until each has resumed (caught up to the room
  head it saw on reopening); handshakes refused (503s the surviving workers
  answered, retried by nginx; and attempts that failed at the client); lost.
- rebalance: 10,000 sockets over 2 workers, a 3rd starts. Reported: time until
  every worker holds the mean +-20 %, until the rebalancers stop; 1012 closes
  against the minimum; lost.

The client process is on the same 2 cores as the stack: its parsing is part of
every time reported.
"""
import asyncio
from collections import Counter
import time
import uuid

from bench import procs
from bench.product_stack import ProductStack
from clients.chatclient import Backoff, State, room_url
from tests.faults import persisted
from tests.faults.crowd import close_crowd, open_crowd
from tests.faults.load import RoomLoad
from tests.faults.probes import await_until, http_json
from tests.faults.scaling import balanced, closes_1012, judge_crowd, minimum_moves, refused_503

FULL = dict(sockets=10000, rooms=100)
SMOKE = dict(sockets=150, rooms=10)
CHAT_ROOMS = 4


def _health(stack, indexes):
    out = {}
    for i in indexes:
        try:
            out[i] = http_json(stack.ws_worker_urls[i - 1].replace("ws://", "http://") + "/healthz")
        except OSError:
            pass
    return out


def _counts(health):
    return [h["admission"]["open"] for h in health.values()]


def _started(workers, env=None):
    """A fresh ProductStack, up; new ports when another process took one meanwhile."""
    for attempt in range(3):
        stack = ProductStack(workers, env)
        stack.ws_base_port = procs.free_run(workers)
        stack.env["LOCAL_WS_BASE_PORT"] = str(stack.ws_base_port)
        try:
            return stack.up()
        except RuntimeError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise


def _local(stack, *args):
    res = stack._local(*args)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/local {' '.join(args)} failed: {res.stdout[-1500:]}{res.stderr[-1500:]}")


# What a real client does (clients/chatclient.py's defaults): 0.2 s doubling to 5 s,
# full jitter, gives up after 40 consecutive failures.
BACKOFF = Backoff()
STORM_DEADLINE = 300.0


async def _crowd(stack, rooms, sockets):
    return await open_crowd([stack.ws_base], rooms, sockets, concurrency=100, timeout=600, backoff=BACKOFF)


async def _crowd_and_chat(stack, sockets, rooms):
    crowd = await _crowd(stack, rooms, sockets)
    load = RoomLoad(lambda r: room_url(stack.ws_base, r), rooms[:CHAT_ROOMS], 1, 1.0, uuid.uuid4().hex[:6])
    await load.start()
    await load.wait_acks(CHAT_ROOMS, timeout=60)
    return crowd, load


async def _judge(stack, crowd, load, rooms, since):
    """Stop chatting, let everyone catch up, compare with Postgres."""
    await load.wait_acks(CHAT_ROOMS, timeout=60)
    await load.stop_sending()
    settings = stack.app_env()
    heads = await asyncio.to_thread(persisted.heads, settings, rooms)
    room_of = {id(c): c.url.rstrip("/").rsplit("/", 1)[-1] for c in crowd}
    try:  # bounded; whoever is still behind at the deadline counts as lost below
        await await_until(lambda: all((c.last_id or 0) >= heads[room_of[id(c)]] for c in crowd), 120,
                          what="every client caught up")
        await load.wait_caught_up({r: heads[r] for r in rooms[:CHAT_ROOMS]}, 60)
    except AssertionError:
        pass
    rows = await asyncio.to_thread(persisted.messages, settings, rooms[:CHAT_ROOMS])
    idle = judge_crowd(crowd, heads)
    chat = load.judge("scaling", rows, since=since)
    return {"lost": idle.lost + chat.lost, "duplicated": idle.duplicated + chat.duplicated,
            "reordered": idle.reordered + chat.reordered, "clients_stopped": idle.stopped,
            "chat_messages_acked": chat.sent, "problems": (idle.problems + chat.problems)[:5]}


async def storm(sockets, rooms_n, log):
    stack = await asyncio.to_thread(_started, 3, {"WS_REBALANCE_RATE": "0"})
    rooms = [f"storm-{uuid.uuid4().hex[:6]}-{i}" for i in range(rooms_n)]
    crowd, load = [], None
    try:
        # Half the sockets on ws-1 alone, then the other half on ws-2/ws-3 (ws-1 is
        # above the fleet mean, so it refuses them and nginx moves on).
        await asyncio.to_thread(_local, stack, "stop", "ws-2", "ws-3")
        first = await _crowd(stack, rooms, sockets // 2)
        await asyncio.to_thread(_local, stack, "start", "ws-2")
        await asyncio.to_thread(_local, stack, "start", "ws-3")
        await await_until(lambda: _health(stack, [1])[1]["admission"]["above_mean"], 30,
                          what="ws-1 sees the newcomers in the census and refuses new sockets")
        crowd, load = await _crowd_and_chat(stack, sockets - sockets // 2, rooms)
        crowd = first + crowd
        pid1 = _read_pid(stack, 1)
        victims = [c for c in crowd + load.all_clients() if c.worker and c.worker.endswith(f":{pid1}")]
        before = _counts(_health(stack, [1, 2, 3]))
        refused_before = refused_503(list(_health(stack, [2, 3]).values()))
        log(f"storm: sockets per worker {before}; draining ws-1 with {len(victims)} sockets")
        t0 = time.monotonic()
        drain = asyncio.ensure_future(asyncio.to_thread(_local, stack, "stop", "ws-1"))

        def dropped_after(c):
            return [o for o in c.outages if o.dropped_at >= t0]

        def resumed(c):
            return (o := dropped_after(c)) and o[0].caught_up_at

        try:
            await await_until(lambda: all(resumed(c) for c in victims), STORM_DEADLINE, interval=0.1,
                              what="every drained socket back and resumed")
        except AssertionError:
            log(f"storm: not every drained socket resumed within {STORM_DEADLINE:.0f} s (reported below)")
        back_times = [o[0].reopened_at - t0 for c in victims if (o := dropped_after(c)) and o[0].reopened_at]
        resumed_times = [resumed(c) - t0 for c in victims if resumed(c)]
        back = max(back_times, default=None)
        resumed_s = max(resumed_times, default=None)
        await drain
        after_health = _health(stack, [2, 3])
        verdict = await _judge(stack, crowd, load, rooms, since=t0)
        failed_attempts = sum(o.attempts for c in victims for o in dropped_after(c)[:1]) - len(victims)
        codes = Counter(code for c in victims for code in c.close_codes[-50:])
        refusals = Counter()
        for h in after_health.values():
            refusals.update(h.get("refusals", {}))
        result = {"sockets": sockets, "drained": len(victims), "before": before, "after": _counts(after_health),
                  "back": len(back_times), "resumed": len(resumed_times),
                  "all_back_s": back and round(back, 2), "all_resumed_s": resumed_s and round(resumed_s, 2),
                  "p50_back_s": _pct(back_times, 0.5), "p99_back_s": _pct(back_times, 0.99),
                  "refused_503_by_workers": refused_503(list(after_health.values())) - refused_before,
                  "failed_attempts_at_clients": max(0, failed_attempts),
                  "clients_gave_up": sum(1 for c in victims if c.state is State.STOPPED),
                  "victims_close_codes": {str(k): v for k, v in codes.most_common(6)},
                  "survivors_refusals": dict(refusals), **verdict}
        log(f"storm: {result}")
        return result
    finally:
        if load is not None:
            await load.close()
        await close_crowd(crowd)
        await asyncio.to_thread(stack.down)


def _pct(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _read_pid(stack, i):
    return int((stack.state / "run" / f"ws-{i}.pid").read_text().split()[0])


async def rebalance(sockets, rooms_n, log):
    stack = await asyncio.to_thread(_started, 3)
    rooms = [f"rebal-{uuid.uuid4().hex[:6]}-{i}" for i in range(rooms_n)]
    crowd, load = [], None
    try:
        await asyncio.to_thread(_local, stack, "stop", "ws-3")  # 2 workers; nginx skips the stopped one
        crowd, load = await _crowd_and_chat(stack, sockets, rooms)
        before = _counts(_health(stack, [1, 2]))
        log(f"rebalance: sockets per worker {before}; starting ws-3")
        t0 = time.monotonic()
        await asyncio.to_thread(_local, stack, "start", "ws-3")
        ready = time.monotonic()
        await await_until(lambda: (c := _counts(_health(stack, [1, 2, 3]))) and len(c) == 3 and balanced(c),
                          300, interval=0.25, what="every worker within mean +-20 %")
        within20 = time.monotonic() - ready

        def settled():
            h = _health(stack, [1, 2, 3])
            return (len(h) == 3 and balanced(_counts(h), 0.1)
                    and not any(x["admission"]["rebalancing"] for x in h.values()))

        await await_until(settled, 300, interval=0.25, what="rebalancers done, every worker within +-10 %")
        done = time.monotonic() - ready
        health = _health(stack, [1, 2, 3])
        verdict = await _judge(stack, crowd, load, rooms, since=t0)
        result = {"sockets": sockets, "before": before, "after": _counts(health),
                  "worker_start_s": round(ready - t0, 2), "within_20pct_s": round(within20, 2),
                  "settled_s": round(done, 2), "closes_1012": closes_1012(list(health.values())),
                  "minimum_moves": minimum_moves(before, 3),
                  "refused_503_by_workers": refused_503(list(health.values())), **verdict}
        log(f"rebalance: {result}")
        return result
    finally:
        if load is not None:
            await load.close()
        await close_crowd(crowd)
        await asyncio.to_thread(stack.down)


def run(names, smoke, log=print):
    size = SMOKE if smoke else FULL
    out = {}
    for name in names:
        fn = {"storm": storm, "rebalance": rebalance}[name]
        out[name] = asyncio.run(fn(size["sockets"], size["rooms"], log))
    return out


def markdown(res):
    lines = ["## Scaling (issue 16)", ""]
    if "storm" in res:
        s = res["storm"]
        lines += [f"Storm: drain a worker holding {s['drained']} of {s['sockets']} sockets over 3 workers "
                  f"(before {s['before']}, after {s['after']}).", "",
                  "| figure | value |", "| --- | --- |",
                  f"| drained sockets open again / resumed | {s['back']} / {s['resumed']} of {s['drained']} |",
                  f"| every drained socket open again (p50, p99 of reopen) | {s['all_back_s']} s "
                  f"({s['p50_back_s']} s, {s['p99_back_s']} s) |",
                  f"| every drained socket resumed (caught up) | {s['all_resumed_s']} s |",
                  f"| handshakes refused by the surviving workers (503, nginx retried) | {s['refused_503_by_workers']} |",
                  f"| failed handshake attempts seen by clients | {s['failed_attempts_at_clients']} |",
                  f"| clients that gave up | {s['clients_gave_up']} |",
                  f"| messages lost / duplicated | {s['lost']} / {s['duplicated']} |", ""]
    if "rebalance" in res:
        r = res["rebalance"]
        lines += [f"Rebalance: {r['sockets']} sockets on 2 workers {r['before']}, a 3rd starts "
                  f"(ready after {r['worker_start_s']} s); at the end {r['after']}.", "",
                  "| figure | value |", "| --- | --- |",
                  f"| new worker ready → every worker within mean ±20 % | {r['within_20pct_s']} s |",
                  f"| new worker ready → rebalancers done, within ±10 % | {r['settled_s']} s |",
                  f"| 1012 closes (minimum) | {r['closes_1012']} ({r['minimum_moves']}) |",
                  f"| handshakes refused by workers (503, nginx retried) | {r['refused_503_by_workers']} |",
                  f"| messages lost / duplicated | {r['lost']} / {r['duplicated']} |", ""]
    return "\n".join(lines)
