"""The wire dialects the load generator speaks: our chat protocol, and Socket.IO's.

Both ride the same `websockets` client, so every stack is driven at the same
client cost; only the framing differs.

- `chat`: the product's and the baseline's protocol (README "WebSocket
  protocol"): `/ws/chat/<room>/`, a JSON welcome frame naming the worker,
  `{"message": text}` up, `{..., "message": text}` down.
- `socketio`: Engine.IO v4 / Socket.IO v5 text framing over the websocket
  transport only (the peer's `bench/peers/socketio/server.js`):
    server `0{"sid":..,"pingInterval":..}`  Engine.IO open
    client `40`                              Socket.IO CONNECT to namespace "/"
    server `40{"sid":..}`                    CONNECT ack
    `42[event, data]`                        an event, either way
    server `2` / client `3`                  Engine.IO ping / pong (the server
                                             closes a socket that misses one)
  The room is a handshake query parameter, joined by the server.
"""
try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is in requirements-dev
    import json

    loads = json.loads


class Chat:
    name = "chat"
    pong = None  # the server's pings are WebSocket control frames, answered by websockets
    # A socket the server closes with 1012 (restart, rebalance) or 1013 (try later)
    # reconnects with ?after=<last id>, as the product's clients do (README).
    resumes = True

    @staticmethod
    def path(room, after=None):
        return f"/ws/chat/{room}/" + (f"?after={after}" if after is not None else "")

    @staticmethod
    async def hello(ws, recv):
        """Read the welcome frame; returns the worker id it names (or None).

        Its position is left on the connection (`bench_position`), and on a
        resume the history texts it carries (`bench_history`)."""
        try:
            doc = loads(await recv())
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        ws.bench_position = doc.get("last_id")
        if "after=" in getattr(getattr(ws, "request", None), "path", ""):  # a resume: what it missed
            ws.bench_history = [m.get("message") for m in doc.get("history") or () if isinstance(m, dict)]
        return doc.get("worker")

    @staticmethod
    def delivery(raw):
        """(message text, id) of a delivery frame; (None, None) for anything else."""
        try:
            doc = loads(raw)
            return doc.get("message"), doc.get("id")
        except (ValueError, AttributeError):
            return None, None

    @staticmethod
    def encode(text):
        return '{"message":"' + text + '"}'

class SocketIO:
    name = "socketio"
    ping, pong = "2", "3"
    resumes = False  # no ids to resume from; the peer never closes a socket to move it

    @staticmethod
    def path(room, after=None):
        return f"/socket.io/?EIO=4&transport=websocket&room={room}"

    @staticmethod
    async def hello(ws, recv):
        """Engine.IO open, Socket.IO CONNECT, then the server's welcome event."""
        first = await recv()
        if not first.startswith("0{"):
            raise ConnectionError(f"not an Engine.IO open packet: {first[:80]!r}")
        await ws.send("40")
        for _ in range(8):  # the ack, maybe a ping, then the welcome event (bounded)
            raw = await recv()
            if raw == SocketIO.ping:
                await ws.send(SocketIO.pong)
            elif raw.startswith("44"):
                raise ConnectionError(f"Socket.IO CONNECT refused: {raw[:200]}")
            elif raw.startswith("42"):
                event = loads(raw[2:])
                if event[0] == "welcome":
                    return event[1].get("worker")
        raise ConnectionError("no Socket.IO welcome event")

    @staticmethod
    def encode(text):
        return '42["message",{"message":"' + text + '"}]'

    @staticmethod
    def delivery(raw):
        return SocketIO.text_of(raw), None

    @staticmethod
    def text_of(raw):
        if not raw.startswith("42"):
            return None
        try:
            event = loads(raw[2:])
            return event[1].get("message") if event[0] == "message" else None
        except (ValueError, AttributeError, IndexError, TypeError):
            return None


DIALECTS = {d.name: d for d in (Chat, SocketIO)}
