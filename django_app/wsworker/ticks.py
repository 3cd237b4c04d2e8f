"""The worker's periodic chores on one grid of the loop's clock, so an idle worker wakes once per tick.

Why: an idle worker (sockets open, nothing sent) spends its CPU on waking up,
not on what each wake-up does. Its chores each slept on a phase of its own:
daphne's reaper and the slow-client check every second, the timeout sweep
every 2 s, the census and the Redis watch every second, the loop-lag metric and
the watchdog's heartbeat twice a second, the pub/sub reader's quiet wait and
the quiet-room check (with Twisted's two log-date timers, wsworker.access: the
loop thread slept and woke 7.5 times a second with one socket open).

Each now sleeps until the next multiple of its period on the loop's clock, so
chores with periods that divide each other become due at the same instant, and
the loop runs every timer due at one instant in one pass (uvloop counts timers in
whole milliseconds from its cached clock; asyncio runs those due within its
clock's resolution). The periods and what each chore does are unchanged, but
the lag metric and the heartbeat run once a second; only the first sleep of
each is shorter, by up to one period. Measured: 3.2 wake-ups a second, and an
idle worker with no socket 1.4 -> 0.9 ms of CPU a second
(tests/unit/test_wsworker.py, docs/benchmarks.md).
"""
import asyncio
import math
import weakref


def at(period: float, now: float) -> float:
    """The next multiple of `period` strictly after `now`."""
    return (math.floor(now / period) + 1) * period


def until(period: float, now: float) -> float:
    """Seconds from `now` to the next multiple of `period` strictly after it."""
    return at(period, now) - now


def delay(period: float) -> float:
    """Seconds from the running loop's clock to its next multiple of `period`: what to give
    call_later, asyncio.sleep or Twisted's callLater (which schedules on the same loop)."""
    return until(period, asyncio.get_event_loop().time())


# Per loop: instant (rounded to the microsecond) -> the one Future every chore due then awaits.
_instants: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, asyncio.Future]]" = (
    weakref.WeakKeyDictionary())


async def sleep(period: float) -> None:
    """Sleep until the next multiple of `period` on the running loop's clock.

    Every chore due at one instant awaits ONE timer (call_at that instant itself,
    not `delay` later: the clock moves between reading it and scheduling). A timer
    each would not do: uvloop starts a timer from a fresh reading of its
    millisecond clock, so two timers for the same instant, scheduled from moments
    that straddle a millisecond, land a millisecond apart and wake two passes (a
    loaded machine showed it: tests/unit/test_ticks.py). A chore cancelled while it
    waits leaves the shared timer to the others (shield)."""
    loop = asyncio.get_running_loop()
    when = at(period, loop.time())
    key = round(when, 6)
    instants = _instants.get(loop)
    if instants is None:
        instants = _instants[loop] = {}
    due = instants.get(key)
    if due is None:
        due = instants[key] = loop.create_future()
        loop.call_at(when, _fire, instants, key)
    await asyncio.shield(due)


def _fire(instants: dict, key: float) -> None:
    due = instants.pop(key, None)
    if due is not None and not due.done():
        due.set_result(None)
