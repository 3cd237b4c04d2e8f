"""wsworker.ticks: chores with periods that divide each other wake the loop together."""
import asyncio

import pytest
import uvloop

from wsworker import ticks


def test_until_is_the_next_multiple_strictly_after_now():
    assert ticks.until(1.0, 5.25) == pytest.approx(0.75)
    assert ticks.until(1.0, 5.0) == pytest.approx(1.0)
    assert ticks.until(2.0, 5.25) == pytest.approx(0.75)
    assert ticks.until(2.0, 6.5) == pytest.approx(1.5)


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_chores_on_different_phases_become_due_in_the_same_pass(run):
    """Three chores started at different moments, every 0.5, 1 and 2 s: each wake of
    the slower ones happens in a pass that also wakes the 0.5 s one."""
    async def main():
        loop = asyncio.get_running_loop()
        woke = {}
        this_pass = []  # a marker shared by everything that runs in one pass of the loop

        def marker():
            if not this_pass:
                this_pass.append(object())
                loop.call_soon(this_pass.clear)  # runs in the next pass
            return this_pass[0]

        async def chore(period, offset, times):
            await asyncio.sleep(offset)
            for _ in range(times):
                await ticks.sleep(period)
                woke.setdefault(period, []).append(marker())

        await asyncio.gather(chore(0.5, 0.0, 8), chore(1.0, 0.13, 3), chore(2.0, 0.31, 1))
        return woke

    woke = run(main())
    fast = {id(m) for m in woke[0.5]}
    assert len(fast) == 8 and {id(m) for m in woke[1.0] + woke[2.0]} <= fast, woke


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_chores_due_at_one_instant_share_one_timer_and_a_cancelled_one_spares_the_others(run):
    """However the loop rounds its clock, chores due at the same instant wake together:
    they wait on one timer. Cancelling one (a worker's shutdown) leaves the rest due."""
    async def main():
        loop = asyncio.get_running_loop()
        timers = []
        real_call_at = loop.call_at

        def counting_call_at(when, *args, **kwargs):
            timers.append(when)
            return real_call_at(when, *args, **kwargs)

        loop.call_at = counting_call_at
        woke = []

        async def chore(name):
            await ticks.sleep(0.2)
            woke.append(name)

        first = asyncio.ensure_future(chore("first"))
        await asyncio.sleep(0)  # the others are scheduled in later passes
        cancelled = asyncio.ensure_future(chore("cancelled"))
        await asyncio.sleep(0)
        last = asyncio.ensure_future(chore("last"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait_for(asyncio.gather(first, last), 5)
        return timers, woke, cancelled.cancelled()

    timers, woke, was_cancelled = run(main())
    assert was_cancelled and sorted(woke) == ["first", "last"]
    # One timer per instant (two only if a pass straddled it: the later chores wait for the next).
    assert len(timers) == len(set(timers)), timers
