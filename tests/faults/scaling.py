"""What the scaling tests and the bench read and judge: sockets per worker, 1012
closes, refusals, and whether every idle client holds every persisted id once.

Shared by tests/faults/test_scaling.py (native), tests/compose (make scale WS=3)
and bench/scaling.py, so all three judge a rebalance by the same rules.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from clients.chatclient import ChatClient, State

from tests.faults.probes import http_json

# docs/operations.md: a balanced fleet holds the mean +- this on every worker.
BALANCE_BAND = 0.2


def room_of(client: ChatClient) -> str:
    return client.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def worker_health(stack) -> list[dict]:
    """Each native worker's /healthz (admission, rebalanced, refusals)."""
    return [http_json(u.replace("ws://", "http://") + "/healthz") for u in stack.ws_worker_urls]


def open_per_worker(health: list[dict]) -> list[int]:
    return [h["admission"]["open"] for h in health]


def closes_1012(health: list[dict]) -> int:
    return sum(h.get("rebalanced", {}).get("close 1012", 0) for h in health)


def refused_503(health: list[dict]) -> int:
    return sum(v for h in health for k, v in h.get("refusals", {}).items() if k.startswith("http 503"))


def balanced(counts: list[int], band: float = BALANCE_BAND) -> bool:
    """Every worker within mean * (1 +- band)."""
    if not counts:
        return False
    mean = sum(counts) / len(counts)
    return all(abs(c - mean) <= band * mean for c in counts)


def minimum_moves(before: list[int], workers: int) -> int:
    """Fewest sockets that must move for `before` to spread evenly over `workers`."""
    share = math.ceil(sum(before) / workers)
    return sum(max(0, c - share) for c in before)


def spread_by_welcome(clients: list[ChatClient]) -> Counter:
    """Open clients per worker, as their welcome named it (host:pid)."""
    return Counter(c.worker for c in clients if c.state is State.OPEN)


@dataclass
class CrowdVerdict:
    clients: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    stopped: int = 0
    reconnects: int = 0
    handshake_failures: int = 0  # attempts that never got a welcome (503 or otherwise)
    problems: list[str] = field(default_factory=list)


def judge_crowd(clients: list[ChatClient], heads: dict[str, int]) -> CrowdVerdict:
    """Each client (after=0) must hold exactly ids 1..head of its room, in order, once."""
    v = CrowdVerdict(clients=len(clients))
    for c in clients:
        head = heads[room_of(c)]
        have = c.last_id or 0
        v.lost += max(0, head - have)
        v.duplicated += c.duplicates
        v.reordered += sum(1 for a, b in zip(c.sequence, c.sequence[1:]) if b <= a)
        v.reconnects += len(c.outages)
        v.handshake_failures += sum(1 for code in c.close_codes if code is None)
        if c.state is State.STOPPED:
            v.stopped += 1
            v.problems.append(f"client stopped: {c.stop_reason}")
        if have > head:
            v.problems.append(f"{room_of(c)}: client has id {have} > persisted head {head}")
    return v
