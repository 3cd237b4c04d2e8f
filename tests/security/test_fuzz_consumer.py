"""Property-based bad-input suite for the chat consumer (hypothesis, real Postgres + Redis).

Why property-based: the consumer's contract (docs/architecture.md) is a small
oracle (every frame maps to exactly one echo, chat.error code or close code), so
hypothesis can throw thousands of shapes at it that nobody would write by hand,
and shrink any failure to the smallest frame that breaks it.

Every example runs through config.asgi.application (Origin check, token auth,
session, routing, consumer) with the real channel layer and database, and checks:
the response is the one the contract defines, a valid message afterwards still
works, a bystander in the same room sees only well-formed chat.message frames,
and no invalid row reached the database.
"""
import asyncio
import json
import string

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as dj_settings
from django.test import override_settings
from hypothesis import HealthCheck, given, settings, strategies as st

from chat import protocol
from config.asgi import application

from tests.security.figures import Figures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_writer_connection")]

ORIGIN = (b"origin", b"http://localhost:8080")
TIMEOUT = 10
ERROR_CODES = {"bad_json", "bad_type", "missing_field", "empty", "too_long", "rate_limited", "unavailable"}
CLOSE_CODES = {4400, 4401, 4403, 4429, 1009, 1012, 1013}
# Bounded on purpose: the whole file stays well under 90 s on 2 shared cores.
FUZZ = settings(max_examples=40, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# The general fuzzers must not trip the rate limiter; test_flood checks it with real limits.
NO_RATE_LIMIT = override_settings(CHAT_RATE_BURST=10**6, CHAT_RATE_PER_SEC=10**6)

FIGURES = Figures("consumer fuzz")


@pytest.fixture(scope="module", autouse=True)
def print_figures():
    yield
    FIGURES.report()


# --- generators --------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def deep(depth):
    return "[" * depth + "]" * depth


text_frames = st.one_of(
    st.text(max_size=200),                                                 # random text, mostly not JSON
    json_values.map(json.dumps),                                           # any JSON value
    st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(json.dumps),
    json_values.map(lambda v: json.dumps({"message": v})),                # wrong types for the field
    st.text(max_size=300).map(lambda t: json.dumps({"message": t})),       # strings incl. blanks, NUL, control
    st.integers(2001, 20000).map(lambda n: json.dumps({"message": "x" * n})),  # too long
    st.integers(1, 50000).map(deep),                                       # deep nesting, up to parser-killing
    st.integers(1, 50000).map(lambda n: '{"message":' + deep(n) + "}"),
    st.sampled_from(['{"message": "\\ud800"}', '{"message": "a\\u0000b"}', "\ufeff{}", "NaN",
                     '{"message": 1e999}', '{"message": "ok", "message": ""}', "[" * 200000]),
)
binary_frames = st.binary(max_size=300) | st.sampled_from([b"\xff\xfe", b'{"message":"\xc3\x28"}', b"\x00" * 1000])
frames = st.one_of(text_frames.map(lambda t: ("text", t)), binary_frames.map(lambda b: ("bytes", b)))

bad_rooms = st.one_of(
    st.text(min_size=65, max_size=100, alphabet=string.ascii_letters),
    st.text(min_size=1, max_size=30).filter(lambda r: not protocol.valid_room(r) and "/" not in r),
)


# --- the oracle ---------------------------------------------------------------

def storable(text):
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected(kind, data):
    """The documented reply to one frame: ("echo", text) or ("error", {codes})."""
    if kind == "bytes":
        return "error", {"bad_type"}
    if len(data) > dj_settings.WS_MAX_MESSAGE_BYTES:
        return "error", {"too_long"}
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return "error", {"bad_json"}
    if not isinstance(obj, dict):
        return "error", {"bad_type"}
    if "message" not in obj:
        return "error", {"missing_field"}
    text = obj["message"]
    if not isinstance(text, str):
        return "error", {"bad_type"}
    text = text.strip()
    if not text:
        return "error", {"empty"}
    if len(text) > dj_settings.CHAT_MAX_MESSAGE_CHARS:
        return "error", {"too_long"}
    return "echo", text


def assert_well_formed(frame, room):
    """A frame any client may receive: a chat.message of this room or a documented chat.error."""
    assert isinstance(frame, dict), frame
    if frame.get("type") == "chat.error":
        assert frame["code"] in ERROR_CODES, frame
        assert isinstance(frame["detail"], str), frame
        return
    assert frame.get("type") == "chat.message", frame
    assert frame["room"] == room
    assert isinstance(frame["id"], int) and frame["id"] >= 1
    assert 1 <= len(frame["message"]) <= dj_settings.CHAT_MAX_MESSAGE_CHARS


# --- helpers ------------------------------------------------------------------

class Socket:
    """One WebsocketCommunicator with bounded waits and JSON decoding."""

    def __init__(self, path, origin=ORIGIN):
        self.comm = WebsocketCommunicator(application, path, headers=[origin] if origin else [])

    async def open(self):
        ok, code = await self.comm.connect(timeout=TIMEOUT)
        assert ok, f"handshake rejected ({code})"
        return self

    async def welcome(self):
        frame = await self.recv()
        assert frame["type"] == "chat.welcome", frame
        return frame

    async def output(self):
        return await self.comm.receive_output(timeout=TIMEOUT)

    async def recv(self):
        out = await self.output()
        assert out["type"] == "websocket.send", out
        return json.loads(out["text"])

    async def send(self, kind, data):
        # Raw ASGI event: send_to() refuses empty frames, which clients can send.
        key = "bytes" if kind == "bytes" else "text"
        await self.comm.send_input({"type": "websocket.receive", key: data})

    async def close(self):
        # A consumer that already died must not hide the assertion that found it.
        try:
            await self.comm.disconnect(timeout=TIMEOUT)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            pass


async def room_pair(room):
    """A sender and a bystander in one room, both past their welcome frame."""
    sender = await Socket(f"/ws/chat/{room}/").open()
    await sender.welcome()
    bystander = await Socket(f"/ws/chat/{room}/").open()
    await bystander.welcome()
    return sender, bystander


async def still_serves(sender, bystander, room, marker):
    """A valid message after the bad input: echoed to the sender, delivered to the bystander."""
    await sender.send("text", json.dumps({"message": marker}))
    mine = await sender.recv()
    assert mine["type"] == "chat.message" and mine["message"] == marker, mine
    for _ in range(50):  # the bystander may first get echoes of earlier valid frames
        theirs = await bystander.recv()
        assert_well_formed(theirs, room)
        if theirs.get("message") == marker:
            assert theirs["id"] == mine["id"]
            return
    pytest.fail("bystander never received the follow-up message")


@database_sync_to_async
def invalid_rows():
    """Rows that break the contract; must always be empty."""
    from chat.models import Message, Room

    limit = dj_settings.CHAT_MAX_MESSAGE_CHARS
    bad = []
    for pk, body, room in Message.objects.values_list("pk", "body", "room__name").iterator():
        if not (1 <= len(body) <= limit) or body != body.strip() or not protocol.valid_room(room):
            bad.append((pk, room, body[:40]))
    bad += [("room", name) for name in Room.objects.values_list("name", flat=True) if not protocol.valid_room(name)]
    return bad


_counter = iter(range(10**9))


def fresh_room(prefix):
    return f"{prefix}-{next(_counter)}"


# --- properties ---------------------------------------------------------------

@FUZZ
@given(batch=st.lists(frames, min_size=1, max_size=5))
async def test_every_frame_gets_its_documented_reply(batch):
    room = fresh_room("fz")
    with NO_RATE_LIMIT:
        sender, bystander = await room_pair(room)
        try:
            for kind, data in batch:
                FIGURES.tried("ws frame")
                await sender.send(kind, data)
                try:
                    out = await sender.output()
                except asyncio.TimeoutError:
                    FIGURES.crashed()
                    pytest.fail(f"no reply within {TIMEOUT}s to {kind} frame {str(data)[:80]!r} (see the app log)")
                assert out["type"] == "websocket.send", f"no reply frame for {kind} {str(data)[:80]!r}: {out}"
                reply = json.loads(out["text"])
                what, want = expected(kind, data)
                if what == "echo":
                    # Postgres cannot store NUL and UTF-8 cannot carry lone surrogates:
                    # such text is refused as bad_type, and only such text.
                    if reply.get("type") == "chat.error":
                        assert reply["code"] == "bad_type" and not storable(want), reply
                        FIGURES.refused("bad_type (unstorable text)")
                    else:
                        assert reply["type"] == "chat.message" and reply["message"] == want, reply
                        FIGURES.accepted()
                else:
                    assert reply.get("type") == "chat.error" and reply["code"] in want, (kind, str(data)[:80], reply)
                    FIGURES.refused(reply["code"])
            await still_serves(sender, bystander, room, "still-here")
        finally:
            await sender.close()
            await bystander.close()
    assert await invalid_rows() == []


@FUZZ
@given(room=bad_rooms)
async def test_bad_room_names_close_4400(room):
    FIGURES.tried("bad room")
    from urllib.parse import quote

    sock = Socket(f"/ws/chat/{quote(room, safe='')}/")
    ok, code = await sock.comm.connect(timeout=TIMEOUT)
    out = await sock.output() if ok else {"type": "websocket.close", "code": code}
    assert out["type"] == "websocket.close" and out.get("code") == 4400, (room, out)
    FIGURES.refused("close 4400")
    await sock.close()


@FUZZ
@given(after=st.one_of(st.text(min_size=1, max_size=30).filter(lambda a: not (a.isascii() and a.isdigit())),
                       st.integers(10**18, 10**30).map(str), st.just("-1"), st.just("")))
async def test_bad_after_closes_4400(after):
    FIGURES.tried("bad after")
    from urllib.parse import urlencode

    sock = Socket(f"/ws/chat/{fresh_room('af')}/?{urlencode({'after': after})}")
    ok, code = await sock.comm.connect(timeout=TIMEOUT)
    out = await sock.output() if ok else {"type": "websocket.close", "code": code}
    assert out["type"] == "websocket.close" and out.get("code") == 4400, (after, out)
    FIGURES.refused("close 4400")
    await sock.close()


@FUZZ
@given(token=st.one_of(st.text(max_size=300), st.binary(max_size=64).map(lambda b: b.hex()),
                       st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=43, max_size=43)))
async def test_bad_tokens_close_4401(token):
    FIGURES.tried("bad token")
    from urllib.parse import urlencode

    sock = Socket(f"/ws/chat/{fresh_room('tk')}/?{urlencode({'token': token})}")
    ok, code = await sock.comm.connect(timeout=TIMEOUT)
    out = await sock.output() if ok else {"type": "websocket.close", "code": code}
    assert out["type"] == "websocket.close" and out.get("code") == 4401, (token[:40], out)
    FIGURES.refused("close 4401")
    await sock.close()


@FUZZ
@given(origin=st.one_of(st.sampled_from(["http://evil.example", "null", "http://localhost.evil.example:8080",
                                          "https://127.0.0.1.nip.io", "file://", ""]),
                        st.text(max_size=60).filter(lambda o: "localhost" not in o and "127.0.0.1" not in o)))
async def test_foreign_origins_close_4403(origin):
    FIGURES.tried("foreign origin")
    sock = Socket(f"/ws/chat/{fresh_room('or')}/", origin=(b"origin", origin.encode("utf-8")))
    ok, code = await sock.comm.connect(timeout=TIMEOUT)
    out = await sock.output() if ok else {"type": "websocket.close", "code": code}
    assert out["type"] == "websocket.close" and out.get("code") == 4403, (origin, out)
    FIGURES.refused("close 4403")
    await sock.close()


async def test_flood_is_rate_limited_then_closed_4429_and_bystander_unaffected():
    """Real limits: burst passes, then rate_limited errors, then close 4429; the room keeps working."""
    room = fresh_room("fl")
    sender, bystander = await room_pair(room)
    burst, max_violations = dj_settings.CHAT_RATE_BURST, dj_settings.CHAT_RATE_MAX_VIOLATIONS
    replies = {"chat.message": 0, "rate_limited": 0}
    close_code = None
    # Bounded: burst + violations + slack frames, each answered within TIMEOUT.
    for i in range(burst + max_violations + 20):
        FIGURES.tried("ws flood frame")
        try:
            await sender.send("text", json.dumps({"message": f"flood {i}"}))
        except Exception:
            break
        out = await sender.output()
        if out["type"] == "websocket.close":
            close_code = out.get("code")
            break
        frame = json.loads(out["text"])
        key = frame["type"] if frame["type"] == "chat.message" else frame["code"]
        assert key in replies, frame
        replies[key] += 1
        FIGURES.refused(key) if key == "rate_limited" else FIGURES.accepted()
    else:
        # The last rate_limited error precedes the close frame.
        out = await sender.output()
        close_code = out.get("code")
    assert replies["chat.message"] >= burst, replies
    assert replies["rate_limited"] == max_violations, replies
    assert close_code == 4429
    FIGURES.refused("close 4429")
    # The bystander got exactly the accepted messages, in order, and still works.
    ids = []
    for _ in range(replies["chat.message"]):
        frame = await bystander.recv()
        assert_well_formed(frame, room)
        ids.append(frame["id"])
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    other = await Socket(f"/ws/chat/{room}/").open()
    await other.welcome()
    await still_serves(other, bystander, room, "after the flood")
    await other.close()
    await bystander.close()
    await asyncio.wait_for(sender.close(), TIMEOUT)
    assert await invalid_rows() == []
