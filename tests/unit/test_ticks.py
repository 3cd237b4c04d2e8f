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
