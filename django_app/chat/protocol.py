"""The WebSocket wire format in one place (docs/architecture.md, "WebSocket protocol").

Consumers, tests and the JS client all agree on these names; change them here
and in the docs together.
"""
import json
import re

ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A client's own message id (idempotent resend): ASCII letters, digits, _ and -,
# 1..64 characters. Clients should send a random UUID: the id is the only proof
# of "same message", it is never shown to other clients, and it is unique per room.
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)

# Close codes (application range 4000-4999 mirrors HTTP statuses for readability).
CLOSE_BAD_ROOM = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RATE_LIMIT = 4429
CLOSE_RESTART = 1012
CLOSE_OVERLOADED = 1013

# chat.error codes: the socket stays open after each of these.
ERR_BAD_JSON = "bad_json"
ERR_BAD_TYPE = "bad_type"
ERR_MISSING_FIELD = "missing_field"
ERR_EMPTY = "empty"
ERR_TOO_LONG = "too_long"
ERR_RATE_LIMITED = "rate_limited"
ERR_UNAVAILABLE = "unavailable"

MESSAGE = "chat.message"
WELCOME = "chat.welcome"
ERROR = "chat.error"
ACK = "chat.ack"  # to the sender of a message that carried a client_msg_id
PING = "ping"  # application heartbeat, client -> server
PONG = "pong"  # its answer; browsers cannot see WebSocket-level pings
PONG_FRAME = '{"type":"pong"}'


def valid_room(name: str) -> bool:
    return bool(ROOM_RE.fullmatch(name or ""))


def valid_client_id(value) -> bool:
    return isinstance(value, str) and bool(CLIENT_ID_RE.fullmatch(value))


def dumps(obj) -> str:
    # Compact separators: this text is what goes over the wire to every socket.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def message_dict(msg_id, room, username, text, ts) -> dict:
    return {
        "type": MESSAGE,
        "id": msg_id,
        "room": room,
        "username": username,
        "message": text,
        "ts": ts,
    }


def welcome(worker, user, room, history_texts, last_id) -> str:
    """history_texts are chat.message frames already serialised (chat.delivery.fanout caches them)."""
    head = dumps({"type": WELCOME, "worker": worker, "user": user, "room": room, "last_id": last_id})
    return head[:-1] + ',"history":[' + ",".join(history_texts) + "]}"


# The retry hint of a connect refused because a backend is unavailable (chat.error
# "unavailable" with "retry_after", then close 1013): clients wait at least this long.
RETRY_AFTER_SECONDS = 2


def error(code: str, detail: str, retry_after: int | None = None) -> str:
    body = {"type": ERROR, "code": code, "detail": detail}
    if retry_after is not None:
        body["retry_after"] = retry_after
    return dumps(body)


def ack(client_msg_id: str, msg_id: int) -> str:
    return dumps({"type": ACK, "client_msg_id": client_msg_id, "id": msg_id})
