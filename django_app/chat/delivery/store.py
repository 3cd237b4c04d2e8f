"""Message persistence: the only code that writes or reads chat history.

Ids are allocated by an UPSERT on the room row in the same statement (so the
same transaction) as the insert. The row lock serialises writers per room, so
ids are dense and commit in id order: when id N is visible, every id < N is
visible too. The Room's gap fill relies on exactly that. One statement stores a
whole batch, across rooms (chat.delivery.writer).
"""
from datetime import timezone

from django.db import connection, transaction

from .. import protocol
from . import db
from ..models import Message, Room

# One statement, so one round trip and (in autocommit) one commit, for any
# number of messages in any number of rooms. Idempotent sends first: a row whose
# (room, client_msg_id) is already stored, or repeats an earlier row of the same
# batch, is not inserted and gets no id (ids stay dense); the statement returns
# the ORIGINAL message for it. Then: count the remaining messages per room,
# allocate that many ids on each room row (locking the rows in name order, so two
# workers' batches never deadlock), and insert every row with its id, numbered in
# the batch's order within each room. A concurrent batch that stored the same
# client id first makes this statement fail on the partial unique index
# (chat_message_room_client_id): it rolls back whole (no id used) and the Writer
# runs it again, when `existing` sees that row. Returns one row per input row,
# in input order: (id, username, body, created_at, duplicate).
_PERSIST_SQL = f"""
WITH input AS (
    SELECT m.room, m.user_id, m.username, m.body, NULLIF(m.cid, '') AS cid, m.ord
    FROM unnest(%(rooms)s::text[], %(user_ids)s::bigint[], %(usernames)s::text[], %(bodies)s::text[],
                %(cids)s::text[])
         WITH ORDINALITY AS m(room, user_id, username, body, cid, ord)
), existing AS (
    SELECT r.name AS room, msg.client_msg_id AS cid, msg.seq, msg.username, msg.body, msg.created_at
    FROM {Message._meta.db_table} msg JOIN {Room._meta.db_table} r ON r.id = msg.room_id
    WHERE msg.client_msg_id IS NOT NULL
      AND (r.name, msg.client_msg_id) IN (SELECT room, cid FROM input WHERE cid IS NOT NULL)
), batch AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.room ORDER BY i.ord) AS n
    FROM input i
    WHERE i.cid IS NULL
       OR (i.ord = (SELECT min(j.ord) FROM input j WHERE j.room = i.room AND j.cid = i.cid)
           AND NOT EXISTS (SELECT 1 FROM existing e WHERE e.room = i.room AND e.cid = i.cid))
), counts AS (
    SELECT room, count(*) AS k FROM batch GROUP BY room
), allocated AS (
    INSERT INTO {Room._meta.db_table} AS r (name, last_id)
    SELECT room, k FROM counts ORDER BY room
    ON CONFLICT (name) DO UPDATE SET last_id = r.last_id + EXCLUDED.last_id
    RETURNING id, name, last_id
), numbered AS (
    SELECT b.ord, b.room, b.cid, b.user_id, b.username, b.body, a.id AS room_id, a.last_id - c.k + b.n AS seq
    FROM batch b JOIN allocated a ON a.name = b.room JOIN counts c ON c.room = b.room
), inserted AS (
    INSERT INTO {Message._meta.db_table} (room_id, seq, user_id, username, body, created_at, client_msg_id)
    SELECT room_id, seq, user_id, username, body, statement_timestamp(), cid FROM numbered
    RETURNING 1
)
SELECT COALESCE(e.seq, nw.seq), COALESCE(e.username, nw.username), COALESCE(e.body, nw.body),
       COALESCE(e.created_at, statement_timestamp()), (e.seq IS NOT NULL OR nw.ord <> i.ord),
       (SELECT count(*) FROM inserted)
FROM input i
LEFT JOIN existing e ON e.room = i.room AND e.cid = i.cid
LEFT JOIN numbered nw ON nw.ord = i.ord OR (nw.room = i.room AND nw.cid = i.cid)
ORDER BY i.ord
"""


def _ts(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wire(room: str, seq, username, body, created_at) -> dict:
    return protocol.message_dict(seq, room, username, body, _ts(created_at))


def _batch_params(items) -> dict:
    return {
        "rooms": [i[0] for i in items], "user_ids": [i[1] for i in items],
        "usernames": [i[2] for i in items], "bodies": [i[3] for i in items],
        "cids": [i[4] for i in items],
    }


def _batch_items(items) -> list[tuple]:
    """(room, user_id, username, text, client_msg_id) tuples; the client id is optional."""
    return [tuple(i) + (None,) * (5 - len(i)) for i in items]


def _batch_result(items, rows) -> list[tuple[dict, bool]]:
    return [(_wire(item[0], seq, username, body, created_at), duplicate)
            for item, (seq, username, body, created_at, duplicate, _n) in zip(items, rows)]


def store_batch(items) -> list[tuple[dict, bool]]:
    """Store [(room, user_id, username, text[, client_msg_id]), ...] in one statement.

    Returns (wire dict, duplicate) per item, in order. Within each room the new
    ids are consecutive and follow the list's order; a duplicate (its client id
    already stored in the room, or earlier in this list) gets the original
    message and stores nothing.
    """
    items = _batch_items(items)
    with connection.cursor() as cur:
        cur.execute(_PERSIST_SQL, _batch_params(items))
        return _batch_result(items, cur.fetchall())


async def store_batch_async(items) -> list[tuple[dict, bool]]:
    """store_batch on the Writer's async connection (chat.delivery.db): no thread hop."""
    items = _batch_items(items)
    return _batch_result(items, await db.execute(_PERSIST_SQL, _batch_params(items)))


def persist_batch(items) -> list[dict]:
    """store_batch without the duplicate flags: the wire dicts, in order."""
    return [msg for msg, _dup in store_batch(items)]



def persist_many(room: str, items) -> list[dict]:
    """Store [(user_id, username, text), ...] in one room with consecutive ids, in that order."""
    return persist_batch((room, *item) for item in items)


def persist(room: str, user_id, username: str, text: str) -> dict:
    return persist_batch([(room, user_id, username, text)])[0]


def heads(rooms) -> dict[str, int]:
    """The newest stored id of each of these rooms, in one query (rooms never written: absent)."""
    return dict(Room.objects.filter(name__in=list(rooms)).values_list("name", "last_id"))


def _rows(qs, room):
    return [
        _wire(room, seq, username, body, created_at)
        for seq, username, body, created_at in qs.values_list("seq", "username", "body", "created_at")
    ]


def history(room: str, limit: int) -> list[dict]:
    """The last `limit` messages, oldest first."""
    qs = Message.objects.filter(room__name=room).order_by("-seq")[:limit]
    return list(reversed(_rows(qs, room)))


def since(room: str, after: int, limit: int) -> list[dict]:
    """Messages with id > after, oldest first, at most `limit` (resume)."""
    qs = Message.objects.filter(room__name=room, seq__gt=after).order_by("seq")[:limit]
    return _rows(qs, room)


def between(room: str, lo: int, hi: int) -> list[dict]:
    """Messages lo..hi inclusive, oldest first (gap fill)."""
    qs = Message.objects.filter(room__name=room, seq__gte=lo, seq__lte=hi).order_by("seq")
    return _rows(qs, room)


def last_id(room: str) -> int:
    return Room.objects.filter(name=room).values_list("last_id", flat=True).first() or 0


def snapshot(room: str, after, history_size: int, resume_max: int) -> tuple[list[dict], int]:
    """Welcome history and the socket's starting position, read in one transaction.

    The position is the last id handed to the client: the newest history entry,
    or the room's counter when there is nothing to send (so a client whose
    ?after= is ahead of a reset database learns the real position).
    """
    with transaction.atomic():
        rows = history(room, history_size) if after is None else since(room, after, resume_max)
        position = rows[-1]["id"] if rows else last_id(room)
    return rows, position
