"""`make scale WS=3` rebalances open sockets (issue 16), judged against Postgres.

Run by tests/compose/test_compose_stack.py on the suite's one stack (it needs
the stack at ws=2); kept here so that file stays short.
"""
from __future__ import annotations

import asyncio
import time
import uuid

from clients.chatclient import room_url
from tests.compose.composectl import FIGURES
from tests.faults.crowd import close_crowd, open_crowd
from tests.faults.load import RoomLoad
from tests.faults.probes import await_until
from tests.faults.scaling import balanced, judge_crowd, minimum_moves, spread_by_welcome


def _persisted(project, rooms: list[str]) -> dict[str, list[tuple[int, str]]]:
    """room -> [(id, text)] straight from Postgres (psql in the db container): the ground truth."""
    names = ",".join("'" + r + "'" for r in rooms)  # generated room names: [a-z0-9-] only
    sql = ("SELECT r.name, m.seq, m.body FROM chat_message m JOIN chat_room r ON r.id = m.room_id"
           f" WHERE r.name IN ({names}) ORDER BY r.name, m.seq")
    out = project.compose("exec", "-T", "db", "sh", "-c", 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -At -F "\t" -c "$0"',
                          sql, timeout=60).stdout
    rows: dict[str, list[tuple[int, str]]] = {r: [] for r in rooms}
    for line in out.splitlines():
        name, seq, body = line.split("\t", 2)
        rows[name].append((int(seq), body))
    return rows


async def check_make_scale_3_rebalances(project) -> None:
    """From ws=2 with 152 sockets open, `make scale WS=3` and nothing else: the new replica
    gets its share (mean +-20 %) within 60 s, moves close to the minimum, 0 lost, 0 duplicated."""
    assert len(project.container_ids("ws")) == 2
    base = f"ws://127.0.0.1:{project.http_port}"
    tag = uuid.uuid4().hex[:6]
    rooms = [f"cscale-{tag}-{i}" for i in range(6)]
    crowd, load = [], None
    try:
        crowd = await open_crowd([base], rooms, 150, concurrency=20)  # under NGINX_MAX_CONN_PER_IP
        load = RoomLoad(lambda r: room_url(base, r), rooms[:2], 1, 1.0, tag)
        await load.start()
        await load.wait_acks(2, timeout=30)
        everyone = crowd + load.all_clients()
        before = sorted(spread_by_welcome(everyone).values())

        t0 = time.monotonic()
        await asyncio.to_thread(project.script, "scale", "3")  # = make scale WS=3, nothing else
        healthy = time.monotonic()
        await await_until(lambda: len(spread_by_welcome(everyone)) == 3
                          and balanced(list(spread_by_welcome(everyone).values())),
                          60, interval=0.5, what="every replica within mean +-20 %")
        took = time.monotonic() - healthy
        await load.wait_acks(2, timeout=30)
        await load.stop_sending()
        rows = await asyncio.to_thread(_persisted, project, rooms)
        heads = {r: (rows[r][-1][0] if rows[r] else 0) for r in rooms}
        await await_until(lambda: all((c.last_id or 0) >= heads[r] for r, cs in
                                      ((r, [c for c in crowd if f"/{r}/" in c.url]) for r in rooms) for c in cs),
                          30, what="every idle client caught up")
        await load.wait_caught_up({r: heads[r] for r in rooms[:2]}, 30)
        after = sorted(spread_by_welcome(everyone).values())
        moved = sum(len(c.outages) for c in everyone)
        idle = judge_crowd(crowd, heads)
        chat = load.judge("compose scale 2->3", {r: rows[r] for r in rooms[:2]}, since=t0)
        FIGURES["`make scale WS=3` with 152 sockets: replica healthy → every replica within ±20 %"] = f"{took:.1f} s"
        FIGURES["`make scale WS=3`: sockets per replica before → after; sockets moved (minimum)"] = (
            f"{before} → {after}; {moved} ({minimum_moves(before, 3)})")
        assert idle.lost == 0 and idle.duplicated == 0 and idle.reordered == 0 and idle.stopped == 0, idle
        assert chat.lost == 0 and chat.duplicated == 0 and not chat.problems, chat
        assert moved <= 1.3 * minimum_moves(before, 3) + 5, (moved, before)
    finally:
        if load is not None:
            await load.close()
        await close_crowd(crowd)
