"""Message persistence: the only code that writes or reads chat history.

Ids are allocated by an UPSERT on the room row in the same statement (so the
same transaction) as the insert. The row lock serialises writers per room, so
ids are dense and commit in id order: when id N is visible, every id < N is
visible too. The Room's gap fill relies on exactly that. One statement stores a
whole batch, across rooms (chat.delivery.writer).
"""
import asyncio
from django.db import connection

from .. import protocol
from . import db
from ..models import Message, Room

# One statement, so one round trip and (in autocommit) one commit, for any
# number of messages in any number of rooms, in time linear in the batch (no
# join whose cost grows with rows x rooms: rows find their room by index in the
# `names` array). The client (_Batch) has already sorted the batch's rooms
# and dropped repeats of a (room, client id) within the batch. Here:
# - `existing`: resends, a row whose client id is already stored in its room
#   (an index probe per row that carries a client id). They get no new id.
# - `allocated`: every room of the batch takes as many ids as it has new rows,
#   on its chat_room row (an upsert), locking the rows in `names` order so two
#   workers' batches never deadlock. The row lock serialises writers per room:
#   ids are dense and commit in id order.
# - `inserted`: every new row with its id, numbered in batch order within its room.
# It returns the new last_id of each room (in `names` order), the timestamp of
# the new rows, the batch positions of the resends with their ORIGINAL message,
# and the count of rows inserted; the client numbers the new rows from that
# (_Batch.result). A concurrent batch that stored the same client id first makes
# this statement fail on the partial unique index (chat_message_room_client_id):
# it rolls back whole (no id used) and the Writer runs it again, when `existing`
# sees that row.
# The batch goes in as two JSON texts and its answer comes back as one JSON
# array: psycopg adapts Python lists to Postgres arrays and back in Python, per
# element and per column, which cost more client CPU than the rest of the
# statement's handling (docs/benchmarks.md); json.dumps/loads are C.
# The wire timestamp, formatted by Postgres: UTC, milliseconds truncated, "Z" (what
# datetime.isoformat(timespec="milliseconds") gives for the same instant in UTC).
_TS = """to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
_PERSIST_SQL = f"""
WITH names AS (
    SELECT array_agg(n ORDER BY o) AS a FROM json_array_elements_text(%(names)s::json) WITH ORDINALITY AS t(n, o)
), input AS (
    SELECT (m.r->>0)::int AS ri, (m.r->>1)::bigint AS user_id, m.r->>2 AS username, m.r->>3 AS body,
           NULLIF(m.r->>4, '') AS cid, m.ord
    FROM json_array_elements(%(rows)s::json) WITH ORDINALITY AS m(r, ord)
), existing AS (
    SELECT i.ord, msg.seq, msg.username, msg.body, msg.created_at
    FROM input i
    JOIN {Room._meta.db_table} r ON r.name = (SELECT a FROM names)[i.ri]
    JOIN {Message._meta.db_table} msg ON msg.room_id = r.id AND msg.client_msg_id = i.cid
    WHERE i.cid IS NOT NULL
), marked AS (
    SELECT i.*, (i.cid IS NULL OR i.ord NOT IN (SELECT ord FROM existing)) AS fresh FROM input i
), counts AS (
    SELECT ri, count(*) FILTER (WHERE fresh) AS k FROM marked GROUP BY ri
), allocated AS (
    INSERT INTO {Room._meta.db_table} AS r (name, last_id)
    SELECT (SELECT a FROM names)[ri], k FROM counts ORDER BY ri
    ON CONFLICT (name) DO UPDATE SET last_id = r.last_id + EXCLUDED.last_id
    RETURNING id, name, last_id
), rooms AS (
    SELECT array_agg(id ORDER BY p) AS ids, array_agg(last_id ORDER BY p) AS lasts
    FROM (SELECT id, last_id, array_position((SELECT a FROM names), name::text) AS p FROM allocated) a
), numbered AS (
    SELECT m.ri, m.cid, m.user_id, m.username, m.body,
           row_number() OVER (PARTITION BY m.ri ORDER BY m.ord) - count(*) OVER (PARTITION BY m.ri) AS back
    FROM marked m WHERE m.fresh
), inserted AS (
    INSERT INTO {Message._meta.db_table} (room_id, seq, user_id, username, body, created_at, client_msg_id)
    SELECT r.ids[n.ri], r.lasts[n.ri] + n.back, n.user_id, n.username, n.body, statement_timestamp(), n.cid
    FROM numbered n, rooms r
    RETURNING 1
)
SELECT json_build_array(r.lasts, {_TS.format("statement_timestamp()")}, e.ords, e.seqs, e.usernames, e.bodies,
                        e.created_ats, (SELECT count(*) FROM inserted))
FROM rooms r, (
    SELECT array_agg(ord ORDER BY ord) AS ords, array_agg(seq ORDER BY ord) AS seqs,
           array_agg(username ORDER BY ord) AS usernames, array_agg(body ORDER BY ord) AS bodies,
           array_agg({_TS.format("created_at")} ORDER BY ord) AS created_ats
    FROM existing
) e
"""


# A room's messages as the async reads answer them (snapshot_async, between_async):
# ONE statement, so one round trip and one snapshot (the room's counter and its rows
# agree, as a transaction around two reads would make them), the rows as one JSON
# array with timestamps formatted by _TS. tests/unit/orm_reads.py reads the same
# through the ORM, and tests/unit/test_store_reads.py checks both agree.
# {cond}, {order} and the LIMIT pick the rows: the newest (history), those after an
# id (resume) or a range (gap fill); the answer is always oldest first.
_READ_SQL = """
SELECT (SELECT last_id FROM {room} WHERE name = %(room)s),
       (SELECT json_agg(json_build_array(m.seq, m.username, m.body, {ts}) ORDER BY m.seq)
        FROM (SELECT seq, username, body, created_at FROM {message}
              WHERE room_id = (SELECT id FROM {room} WHERE name = %(room)s) AND {{cond}}
              ORDER BY seq {{order}} LIMIT %(limit)s) m)
""".format(room=Room._meta.db_table, message=Message._meta.db_table, ts=_TS.format("m.created_at"))
_HISTORY_SQL = _READ_SQL.format(cond="TRUE", order="DESC")
_SINCE_SQL = _READ_SQL.format(cond="seq > %(lo)s", order="ASC")
_BETWEEN_SQL = _READ_SQL.format(cond="seq BETWEEN %(lo)s AND %(hi)s", order="ASC")


async def _read(sql: str, room: str, **params) -> tuple[list[dict], int]:
    """(wire dicts oldest first, the room's counter) on the read connection (chat.delivery.db).

    Shielded, as asgiref shields the ORM's thread: a caller that stops waiting (a
    connect's WS_CONNECT_TIMEOUT) leaves the statement to finish instead of
    cancelling it, which would make psycopg cancel it in the server and, if that
    fails (a frozen Postgres), wait and close the connection."""
    ((last_id, rows),) = await asyncio.shield(db.execute(sql, {"room": room, **params}, role="read"))
    messages = [protocol.message_dict(seq, room, username, body, ts) for seq, username, body, ts in rows or ()]
    return messages, last_id or 0


async def snapshot_async(room: str, after, history_size: int, resume_max: int) -> tuple[list[dict], int]:
    """A new socket's welcome history and starting position, in one statement.

    after None: the newest history_size messages; else up to resume_max after it.
    The position is the last id handed to the client: the newest message sent,
    or the room's counter when there is nothing to send (so a client whose
    ?after= is ahead of a reset database learns the real position)."""
    if after is None:
        rows, last_id = await _read(_HISTORY_SQL, room, limit=history_size)
    else:
        rows, last_id = await _read(_SINCE_SQL, room, lo=after, limit=resume_max)
    return rows, rows[-1]["id"] if rows else last_id


async def between_async(room: str, lo: int, hi: int) -> list[dict]:
    """Messages lo..hi inclusive, oldest first (gap fill), in one statement."""
    rows, _last_id = await _read(_BETWEEN_SQL, room, lo=lo, hi=hi, limit=max(0, hi - lo + 1))
    return rows


class _Batch:
    """One batch as the statement takes it, and how its answer maps back to the input rows.

    Rows repeating a (room, client id) of an earlier row of the same batch are not
    sent: they get the first row's message, flagged duplicate. Rooms are numbered
    in code point order (Postgres's "C" order), the order their rows are locked in.
    """

    __slots__ = ("items", "sent", "first_of", "names", "ris")

    def __init__(self, items):
        self.items = [tuple(i) + (None,) * (5 - len(i)) for i in items]
        self.sent: list[int] = []  # input positions sent to Postgres
        self.first_of: dict[int, int] = {}  # input position -> position of the row it repeats
        seen: dict = {}
        for pos, item in enumerate(self.items):
            key = (item[0], item[4]) if item[4] else None
            if key is not None and key in seen:
                self.first_of[pos] = seen[key]
                continue
            if key is not None:
                seen[key] = pos
            self.sent.append(pos)
        self.names = sorted({self.items[pos][0] for pos in self.sent})
        index = {name: ri for ri, name in enumerate(self.names, 1)}
        self.ris = [index[self.items[pos][0]] for pos in self.sent]

    def params(self) -> dict:
        items = self.items
        rows = [(ri, *items[pos][1:]) for ri, pos in zip(self.ris, self.sent)]
        return {"names": protocol.dumps(self.names), "rows": protocol.dumps(rows)}

    def result(self, answer) -> list[tuple[dict, bool]]:
        lasts, created_at, ords, seqs, usernames, bodies, created_ats, inserted = answer
        resent = {ord_ - 1: i for i, ord_ in enumerate(ords or ())}  # sent position -> index in the arrays
        fresh = [k for k in range(len(self.sent)) if k not in resent]
        if inserted != len(fresh):
            raise RuntimeError(f"stored {inserted} message(s), expected {len(fresh)}")
        # Per room, the new rows take the room's last ids, in batch order.
        remaining = [0] * len(self.names)
        for k in fresh:
            remaining[self.ris[k] - 1] += 1
        out: list = [None] * len(self.items)
        stamp = created_at  # one statement, one timestamp for all its new rows
        for k, pos in enumerate(self.sent):
            room = self.items[pos][0]
            if k in resent:
                i = resent[k]
                out[pos] = (protocol.message_dict(seqs[i], room, usernames[i], bodies[i], created_ats[i]), True)
                continue
            ri = self.ris[k] - 1
            seq = lasts[ri] - remaining[ri] + 1
            remaining[ri] -= 1
            out[pos] = (protocol.message_dict(seq, room, self.items[pos][2], self.items[pos][3], stamp), False)
        for pos, first in self.first_of.items():
            out[pos] = (out[first][0], True)
        return out


def store_batch(items) -> list[tuple[dict, bool]]:
    """Store [(room, user_id, username, text[, client_msg_id]), ...] in one statement.

    Returns (wire dict, duplicate) per item, in order. Within each room the new
    ids are consecutive and follow the list's order; a duplicate (its client id
    already stored in the room, or earlier in this list) gets the original
    message and stores nothing.
    """
    batch = _Batch(items)
    with connection.cursor() as cur:
        cur.execute(_PERSIST_SQL, batch.params())
        (answer,) = cur.fetchone()  # psycopg loads the json column
        return batch.result(answer)


async def store_batch_async(items) -> list[tuple[dict, bool]]:
    """store_batch on the Writer's async connection (chat.delivery.db): no thread hop."""
    batch = _Batch(items)
    ((answer,),) = await db.execute(_PERSIST_SQL, batch.params())
    return batch.result(answer)


def persist_batch(items) -> list[dict]:
    """store_batch without the duplicate flags: the wire dicts, in order."""
    return [msg for msg, _dup in store_batch(items)]



def persist_many(room: str, items) -> list[dict]:
    """Store [(user_id, username, text), ...] in one room with consecutive ids, in that order."""
    return persist_batch((room, *item) for item in items)


def persist(room: str, user_id, username: str, text: str) -> dict:
    return persist_batch([(room, user_id, username, text)])[0]


_HEADS_SQL = f"SELECT name, last_id FROM {Room._meta.db_table} WHERE name = ANY(%(names)s)"


async def heads_async(rooms) -> dict[str, int]:
    """The newest stored id of each of these rooms (rooms never written: absent), in one
    statement on the read connection (chat.delivery.db): the quiet-room check runs it
    every QUIET_CHECK_SECONDS on every worker with traffic, and through the ORM each run
    cost a hop to a worker thread and back. Shielded as _read is."""
    rows = await asyncio.shield(db.execute(_HEADS_SQL, {"names": list(rooms)}, role="read"))
    return dict(rows)
