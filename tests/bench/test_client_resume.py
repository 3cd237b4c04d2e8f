"""The bench's subscribers resume like the product's clients: a socket the server
closes with 1012 (a worker draining, the rebalancer moving it) reconnects with
?after=<last id>, and the messages it missed meanwhile count as delivered, not
lost. Against the real product stack (2 workers behind nginx)."""
import asyncio
import os
import signal
import time

import pytest
from websockets.asyncio.client import connect

from bench.client import MARK, ORIGIN, Subscribers
from bench.dialects import Chat
from bench.product_stack import ProductStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    with ProductStack(workers=2) as s:
        yield s


async def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_a_subscriber_closed_with_1012_resumes_and_misses_nothing(stack):
    async def scenario():
        subs = Subscribers()
        placed = await subs.ensure([stack.ws_base], {"resume": 1}, workers=1)
        ((sub_worker, _n),) = placed["workers"].items()
        pids = stack.server_pids()
        sub_pid = int(sub_worker.rsplit(":", 1)[1])
        other = next(i for i in (1, 2) if pids[f"ws{i}"] != sub_pid)
        publisher = await connect(stack.ws_worker_urls[other - 1] + Chat.path("resume"), origin=ORIGIN)
        await publisher.recv()  # welcome

        async def send(seq):
            await publisher.send(Chat.encode(f"{MARK}1|resume|{seq}|{time.time_ns()}"))

        await send(0)
        await _until(lambda: subs.count["1"] == 1)
        os.kill(sub_pid, signal.SIGTERM)  # the worker drains: its sockets get 1012
        for seq in range(1, 4):  # while it drains and the subscriber reconnects
            await send(seq)
        await _until(lambda: subs.resumed or subs.closed)
        await send(4)  # after the resume, live
        await _until(lambda: subs.count["1"] >= 5 or subs.closed)
        await publisher.close()
        result = subs.collect(1)
        await subs.close_all()
        return result

    result = asyncio.run(scenario())
    assert result["received"] == 5
    assert result["resumed"] == {1012: 1} and result["closed"] == {}
