"""A room's stored messages read through Django's ORM: the independent reference that
the product's one-statement reads (chat.delivery.store.snapshot_async, between_async)
and its Writer's answers are checked against. The product read this way, on Channels'
database thread, until session 14."""
from datetime import timezone

from django.db import transaction

from chat import protocol
from chat.models import Message, Room


def _ts(dt) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rows(qs, room):
    return [
        protocol.message_dict(seq, room, username, body, _ts(created_at))
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
    """Welcome history and the socket's starting position, in one transaction: the
    newest history entry, or the room's counter when there is nothing to send."""
    with transaction.atomic():
        rows = history(room, history_size) if after is None else since(room, after, resume_max)
        position = rows[-1]["id"] if rows else last_id(room)
    return rows, position


def heads(rooms) -> dict[str, int]:
    """The newest stored id of each room; a room never written is absent (the quiet-room check's read)."""
    return dict(Room.objects.filter(name__in=list(rooms)).values_list("name", "last_id"))
