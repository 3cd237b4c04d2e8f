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


async def sleep(period: float) -> None:
    """Sleep until the next multiple of `period` on the running loop's clock.

    Scheduled at that instant itself (call_at), not `delay` later (asyncio.sleep):
    the clock moves between reading it and scheduling, and a timer even a few
    microseconds past the others could miss their pass."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    handle = loop.call_at(at(period, loop.time()), _wake, future)
    try:
        await future
    finally:
        handle.cancel()


def _wake(future) -> None:
    if not future.done():
        future.set_result(None)
