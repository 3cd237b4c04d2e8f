"""The ground truth: what Postgres stored, read straight from the tables.

Read with plain SQL, not through the app, so a bug in the app's resume path
cannot hide itself from the check that judges it.
"""

from __future__ import annotations

import psycopg


def connect(settings: dict) -> psycopg.Connection:
    return psycopg.connect(
        host=settings.get("POSTGRES_HOST", "127.0.0.1"),
        port=int(settings["POSTGRES_PORT"]),
        user=settings["POSTGRES_USER"],
        password=settings["POSTGRES_PASSWORD"],
        dbname=settings["POSTGRES_DB"],
        connect_timeout=5,
        autocommit=True,
    )


def messages(settings: dict, rooms: list[str]) -> dict[str, list[tuple[int, str]]]:
    """room -> [(id, text)] in id order: the sequence every client must end with."""
    out: dict[str, list[tuple[int, str]]] = {room: [] for room in rooms}
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT r.name, m.seq, m.body FROM chat_message m JOIN chat_room r ON r.id = m.room_id"
            " WHERE r.name = ANY(%s) ORDER BY r.name, m.seq",
            (rooms,),
        ).fetchall()
    for name, seq, body in rows:
        out[name].append((int(seq), body))
    return out


def heads(settings: dict, rooms: list[str]) -> dict[str, int]:
    """room -> highest persisted id (0 for a room with no message yet)."""
    out = {room: 0 for room in rooms}
    with connect(settings) as conn:
        rows = conn.execute(
            "SELECT r.name, COALESCE(MAX(m.seq), 0) FROM chat_room r"
            " LEFT JOIN chat_message m ON m.room_id = r.id WHERE r.name = ANY(%s) GROUP BY r.name",
            (rooms,),
        ).fetchall()
    for name, head in rows:
        out[name] = int(head)
    return out
