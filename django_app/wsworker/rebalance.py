"""Rebalancing: a worker above the fleet mean hands sockets to the others.

A worker added to a busy fleet gets no existing socket: sockets live for hours.
After each census (wsworker.census), a worker holding more than the census's
`upper` (mean + WS_BALANCE_TOLERANCE, at least census.MIN_SLACK sockets) on
REBALANCE_AFTER consecutive censuses starts closing sockets with 1012
("restarting: reconnect now"), at most WS_REBALANCE_RATE per second, until it
holds its fair share (the mean, rounded up). Meanwhile it refuses new
handshakes (wsworker.admission), so the clients it closes reconnect through
nginx to the workers below the mean and resume with ?after=: nothing is lost
or duplicated, and each socket moves once, so the number of closes is close to
the minimum (the sum of the excesses).

Which sockets: random ones among those the app marks movable (the registry
contract: a consumer in registry.live with a true `movable`; chat: welcomed,
caught up with its room, no message of its own being stored). Random spreads
the moves over rooms and clients; the oldest would single out the same
long-lived clients on every scale-out.

Never during a drain (the drain closes everything anyway), never without a
census (no Redis: no mean to balance against), and only towards workers that
have been in the census for census.SETTLED_CENSUSES seconds (> NGINX_RESOLVER_VALID's
2 s), so nginx and the Service know the new worker before sockets are sent its way. Every close is counted (registry.rebalanced)
and each rebalance is logged when it starts and ends.
"""
import asyncio
import logging
import math
import random
import weakref

from . import admission, conf, registry
from .protocol import CLOSE_RESTART

logger = logging.getLogger(__name__)

REBALANCE_AFTER = 2  # consecutive censuses above `upper` (with somewhere to go) before closing starts
STEP_SECONDS = 0.1

_seen_above = 0
_target = 0
_total = 0  # fleet sockets when this rebalance started
_task: asyncio.Task | None = None
_candidates: list = []


def on_census(fleet) -> None:
    """Called by the census once a second with its snapshot; None when there is no
    census or no settled worker below the mean to move sockets to."""
    global _seen_above, _target, _candidates
    if fleet is None or registry.state.draining or fleet.me not in fleet.counts:
        _seen_above = 0
        admission.rebalancing = False  # the close loop sees it and stops
        return
    if admission.rebalancing:
        # The fair share of the fleet as it was at the start, over today's workers:
        # sockets in flight between workers are in nobody's count, so a fresh mean
        # would dip and move more than needed.
        _target = math.ceil(_total / len(fleet.counts))
        # Fresh order each second: sockets opened since are candidates too.
        _candidates = _shuffled_live()
        return
    _target = fleet.target
    _seen_above = _seen_above + 1 if fleet.mine > fleet.upper else 0
    if _seen_above >= REBALANCE_AFTER and float(conf.get("WS_REBALANCE_RATE")) > 0:
        _seen_above = 0
        _start(fleet)


def _shuffled_live() -> list:
    found = list(registry.live)
    random.shuffle(found)
    return found


def _start(fleet) -> None:
    global _task, _candidates, _total
    if _task is not None and not _task.done():
        return
    _total = sum(fleet.counts.values())
    admission.rebalancing = True
    _candidates = _shuffled_live()
    logger.info("rebalance: %d sockets > %.0f (mean %.1f over %d workers + WS_BALANCE_TOLERANCE): "
                "closing down to %d with %d, at most %s/s", admission.open_sockets, fleet.upper, fleet.mean,
                len(fleet.counts), fleet.target, CLOSE_RESTART, conf.get("WS_REBALANCE_RATE"))
    _task = asyncio.get_running_loop().create_task(_close_excess(), name="wsworker-rebalance")


def _pick(n: int, closing) -> list:
    """Up to n movable sockets, in the random order of _candidates."""
    picked = []
    while _candidates and len(picked) < n:
        consumer = _candidates.pop()
        if (consumer in registry.live and consumer not in closing and not getattr(consumer, "closed", False)
                and getattr(consumer, "movable", False)):
            picked.append(consumer)
    return picked


async def _close_excess() -> None:
    rate = float(conf.get("WS_REBALANCE_RATE"))
    per_step = rate * STEP_SECONDS
    budget, closed = 0.0, 0
    closing = weakref.WeakSet()  # closed by us, not yet gone (they still count as open)
    try:
        while admission.rebalancing and not registry.state.draining:
            leaving = sum(1 for c in closing if c in registry.live)
            excess = admission.open_sockets - leaving - _target
            if excess <= 0:
                break
            budget = min(budget + per_step, max(1.0, per_step))
            batch = _pick(min(int(budget), excess), closing)
            if batch:
                budget -= len(batch)
                closing.update(batch)
                await registry.close_sockets(batch, CLOSE_RESTART, logger)
                closed += len(batch)
                registry.rebalanced[f"close {CLOSE_RESTART}"] += len(batch)
            await asyncio.sleep(STEP_SECONDS)
    except Exception:
        logger.exception("rebalance failed")
    finally:
        admission.rebalancing = False
        logger.info("rebalance: done, closed %d socket(s) with %d; %d open (target %d)",
                    closed, CLOSE_RESTART, admission.open_sockets, _target)
