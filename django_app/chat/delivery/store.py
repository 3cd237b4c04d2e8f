"""Message persistence: the only code that writes or reads chat history.

Ids are allocated by an UPSERT on the room row in the same statement (so the
same transaction) as the insert. The row lock serialises writers per room, so ids are dense and
commit in id order: when id N is visible, every id < N is visible too. The
consumer's gap-fill relies on exactly that.
"""
from datetime import timezone

from django.db import connection, transaction

from .. import protocol
from ..models import Message, Room

# One statement, so one round trip and (in autocommit) one commit, for any
# number of messages: allocate k ids on the room row and insert the k rows with
# them, in the given order. The room row stays locked only until this commits.
_PERSIST_SQL = f"""
WITH allocated AS (
    INSERT INTO {Room._meta.db_table} AS r (name, last_id) VALUES (%(room)s, %(k)s)
    ON CONFLICT (name) DO UPDATE SET last_id = r.last_id + EXCLUDED.last_id
    RETURNING id, last_id
)
INSERT INTO {Message._meta.db_table} (room_id, seq, user_id, username, body, created_at)
SELECT a.id, a.last_id - %(k)s + m.ord, m.user_id, m.username, m.body, statement_timestamp()
FROM allocated a,
     unnest(%(user_ids)s::bigint[], %(usernames)s::text[], %(bodies)s::text[])
         WITH ORDINALITY AS m(user_id, username, body, ord)
RETURNING seq, created_at
"""


def _ts(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wire(room: str, seq, username, body, created_at) -> dict:
    return protocol.message_dict(seq, room, username, body, _ts(created_at))


def persist_many(room: str, items) -> list[dict]:
    """Store [(user_id, username, text), ...] with consecutive ids, in that order."""
    items = list(items)
    with connection.cursor() as cur:
        cur.execute(_PERSIST_SQL, {
            "room": room, "k": len(items),
            "user_ids": [i[0] for i in items], "usernames": [i[1] for i in items], "bodies": [i[2] for i in items],
        })
        rows = sorted(cur.fetchall())
    return [_wire(room, seq, username, text, created_at)
            for (seq, created_at), (_, username, text) in zip(rows, items)]


def persist(room: str, user_id, username: str, text: str) -> dict:
    return persist_many(room, [(user_id, username, text)])[0]


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
