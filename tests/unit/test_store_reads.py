"""A Room's reads on the worker's read connection (chat.delivery.store.snapshot_async,
between_async) answer exactly as the same reads through the ORM do (orm_reads), against real
Postgres: the same messages, ids, timestamps and starting position, for a new socket,
a resume and a gap fill, in a room with history, an empty one and one never written."""
import asyncio

import pytest
from channels.db import database_sync_to_async

from chat.delivery import db, store
from chat.models import Message

from . import orm_reads

pytestmark = pytest.mark.django_db(transaction=True)

_orm_snapshot = database_sync_to_async(orm_reads.snapshot)
_orm_between = database_sync_to_async(orm_reads.between)


async def _room_with(name, n):
    if n:
        rows = [(None, f"u{k % 3}", f"message {k} «ü»") for k in range(n)]
        await database_sync_to_async(store.persist_many)(name, rows)


async def test_snapshots_and_gap_fills_answer_as_the_orm_does():
    await _room_with("reads-full", 12)
    await _room_with("reads-one", 1)
    await _room_with("reads-gone", 3)  # its messages deleted: the counter stays at 3
    await database_sync_to_async(Message.objects.filter(room__name="reads-gone").delete)()
    cases = [
        (None, 5, 0), (None, 50, 0), (None, 0, 0),  # a new socket's history
        (0, 50, 1000), (4, 50, 1000), (4, 50, 3), (11, 50, 1000), (12, 50, 1000), (40, 50, 1000),  # resumes
    ]
    for room in ("reads-full", "reads-one", "reads-gone", "reads-never"):
        for after, history_size, resume_max in cases:
            want = await _orm_snapshot(room, after, history_size, resume_max)
            got = await store.snapshot_async(room, after, history_size, resume_max)
            assert got == want, (room, after, history_size, resume_max)
        for lo, hi in [(1, 12), (3, 7), (12, 20), (5, 5), (9, 2)]:
            assert await store.between_async(room, lo, hi) == await _orm_between(room, lo, hi), (room, lo, hi)
    assert await store.snapshot_async("reads-gone", None, 50, 0) == ([], 3)
    rows, position = await store.snapshot_async("reads-full", 4, 50, 3)
    assert [m["id"] for m in rows] == [5, 6, 7] and position == 7  # the sanity of the comparison itself
    assert rows[0]["message"] == "message 4 «ü»" and rows[0]["ts"].endswith("Z")
    # The quiet-room check's read: every room's newest id, a room never written absent.
    rooms = ["reads-full", "reads-one", "reads-gone", "reads-never"]
    want = await database_sync_to_async(orm_reads.heads)(rooms)
    assert await store.heads_async(rooms) == want == {"reads-full": 12, "reads-one": 1, "reads-gone": 3}
    assert await store.heads_async([]) == {}


async def test_reads_run_on_their_own_connection_not_the_writers():
    """A storm of joins must not queue behind the Writer's statements, nor they behind it."""
    await _room_with("reads-own", 2)
    await store.store_batch_async([("reads-own", None, "w", "stored by the Writer")])
    await store.snapshot_async("reads-own", None, 50, 0)
    write, read = await db.connection("write"), await db.connection("read")
    assert write is not read and not write.closed and not read.closed


async def test_many_rooms_joined_at_once_share_one_read_connection(monkeypatch):
    """Concurrent first reads (a burst of connects into new rooms) open ONE connection."""
    import psycopg

    opened = []
    connect = psycopg.AsyncConnection.connect

    async def counted(*args, **kwargs):
        conn = await connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", counted)
    answers = await asyncio.gather(*(store.snapshot_async(f"reads-burst-{i}", None, 50, 0) for i in range(20)))
    assert answers == [([], 0)] * 20
    pids = await asyncio.gather(*(db.execute("SELECT pg_backend_pid()", {}, role="read") for _ in range(5)))
    assert len({p for ((p,),) in pids}) == 1 and len(opened) == 1
