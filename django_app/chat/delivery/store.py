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
# number of messages in any number of rooms: count the batch's messages per
# room, allocate that many ids on each room row (locking the rows in name
# order, so two workers' batches never deadlock), and insert every row with its
# id. Ids are numbered in the batch's order within each room. The room rows
# stay locked only until this commits. Returns each room's new last_id and the
# statement's timestamp: message n of k in room r gets last_id - k + n.
_PERSIST_SQL = f"""
WITH batch AS (
    SELECT m.room, m.user_id, m.username, m.body,
           row_number() OVER (PARTITION BY m.room ORDER BY m.ord) AS n
    FROM unnest(%(rooms)s::text[], %(user_ids)s::bigint[], %(usernames)s::text[], %(bodies)s::text[])
         WITH ORDINALITY AS m(room, user_id, username, body, ord)
), counts AS (
    SELECT room, count(*) AS k FROM batch GROUP BY room
), allocated AS (
    INSERT INTO {Room._meta.db_table} AS r (name, last_id)
    SELECT room, k FROM counts ORDER BY room
    ON CONFLICT (name) DO UPDATE SET last_id = r.last_id + EXCLUDED.last_id
    RETURNING id, name, last_id
), inserted AS (
    INSERT INTO {Message._meta.db_table} (room_id, seq, user_id, username, body, created_at)
    SELECT a.id, a.last_id - c.k + b.n, b.user_id, b.username, b.body, statement_timestamp()
    FROM batch b JOIN allocated a ON a.name = b.room JOIN counts c ON c.room = b.room
    RETURNING 1
)
SELECT a.name, a.last_id, statement_timestamp(), (SELECT count(*) FROM inserted)
FROM allocated a
"""


def _ts(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wire(room: str, seq, username, body, created_at) -> dict:
    return protocol.message_dict(seq, room, username, body, _ts(created_at))


def _batch_params(items) -> dict:
    return {
        "rooms": [i[0] for i in items], "user_ids": [i[1] for i in items],
        "usernames": [i[2] for i in items], "bodies": [i[3] for i in items],
    }


def _batch_result(items, rows) -> list[dict]:
    """The wire dicts of `items`, from the statement's (room, last_id, timestamp) rows."""
    heads = {name: (last_id, created_at) for name, last_id, created_at, _ in rows}
    counts: dict[str, int] = {}
    for room, *_ in items:
        counts[room] = counts.get(room, 0) + 1
    out, seen = [], {}
    for room, _user_id, username, text in items:
        last_id, created_at = heads[room]
        seen[room] = n = seen.get(room, 0) + 1
        out.append(_wire(room, last_id - counts[room] + n, username, text, created_at))
    return out


def persist_batch(items) -> list[dict]:
    """Store [(room, user_id, username, text), ...] in one statement; their wire dicts, in order.

    Within each room the ids are consecutive and follow the list's order.
    """
    items = list(items)
    with connection.cursor() as cur:
        cur.execute(_PERSIST_SQL, _batch_params(items))
        return _batch_result(items, cur.fetchall())


async def persist_batch_async(items) -> list[dict]:
    """persist_batch on the Writer's async connection (chat.delivery.db): no thread hop."""
    items = list(items)
    return _batch_result(items, await db.execute(_PERSIST_SQL, _batch_params(items)))


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
