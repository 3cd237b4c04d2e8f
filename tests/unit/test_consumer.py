"""The chat consumer through the real ASGI stack (origin, token, session, router)
against real Postgres and Redis."""
import asyncio

import pytest
from channels.db import database_sync_to_async

from chat.models import Message

from .conftest import Client, persist, welcome

pytestmark = pytest.mark.django_db(transaction=True)


async def test_welcome_has_worker_user_room_and_history():
    for n in range(3):
        await persist("lobby", None, "alice", f"m{n}")
    client, frame = await welcome("/ws/chat/lobby/")
    assert frame["room"] == "lobby"
    assert frame["user"].startswith("anon-")
    assert ":" in frame["worker"]
    assert [m["message"] for m in frame["history"]] == ["m0", "m1", "m2"]
    assert [m["id"] for m in frame["history"]] == [1, 2, 3]
    assert frame["last_id"] == 3
    assert frame["history"][0]["ts"].endswith("Z")
    await client.close()


async def test_history_is_capped_to_the_newest(settings):
    settings.CHAT_HISTORY_SIZE = 2
    for n in range(4):
        await persist("capped", None, "alice", f"m{n}")
    client, frame = await welcome("/ws/chat/capped/")
    assert [m["id"] for m in frame["history"]] == [3, 4]
    await client.close()


async def test_message_is_persisted_and_echoed():
    client, _ = await welcome("/ws/chat/persist/")
    await client.send({"message": "  hello world  "})
    frame = await client.recv()
    assert frame["type"] == "chat.message"
    assert frame["id"] == 1 and frame["message"] == "hello world" and frame["room"] == "persist"
    row = await database_sync_to_async(Message.objects.get)(room__name="persist", seq=1)
    assert row.body == "hello world" and row.username == frame["username"]
    await client.close()


async def test_two_sockets_get_dense_ids_in_order():
    a, _ = await welcome("/ws/chat/dense/")
    b, _ = await welcome("/ws/chat/dense/")
    await asyncio.gather(*(a.send({"message": f"a{i}"}) for i in range(3)), *(b.send({"message": f"b{i}"}) for i in range(3)))
    got_a = [(await a.recv())["id"] for _ in range(6)]
    got_b = [(await b.recv())["id"] for _ in range(6)]
    assert got_a == got_b == [1, 2, 3, 4, 5, 6]
    await a.close()
    await b.close()


async def test_gap_is_filled_from_postgres():
    watcher, frame = await welcome("/ws/chat/gaps/")
    assert frame["last_id"] == 0
    # Stored but never broadcast (as when Redis lost the publish).
    await persist("gaps", None, "ghost", "lost-1")
    await persist("gaps", None, "ghost", "lost-2")
    sender, _ = await welcome("/ws/chat/gaps/")
    await sender.send({"message": "live"})
    got = [await watcher.recv() for _ in range(3)]
    assert [(m["id"], m["message"]) for m in got] == [(1, "lost-1"), (2, "lost-2"), (3, "live")]
    await watcher.close()
    await sender.close()


async def test_resume_after_returns_only_newer_messages():
    for n in range(5):
        await persist("resume", None, "alice", f"m{n + 1}")
    client, frame = await welcome("/ws/chat/resume/?after=2")
    assert [m["id"] for m in frame["history"]] == [3, 4, 5]
    assert frame["last_id"] == 5
    await client.close()


async def test_resume_is_capped(settings):
    settings.CHAT_RESUME_MAX = 2
    for n in range(5):
        await persist("resumecap", None, "alice", f"m{n + 1}")
    client, frame = await welcome("/ws/chat/resumecap/?after=1")
    assert [m["id"] for m in frame["history"]] == [2, 3]
    assert frame["last_id"] == 3
    # The next live message brings the socket up to date without a gap.
    await client.send({"message": "live"})
    assert [(await client.recv())["id"] for _ in range(3)] == [4, 5, 6]
    await client.close()


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", ""])
async def test_bad_after_is_refused(after):
    client = await Client(f"/ws/chat/lobby/?after={after}").connect()
    assert await client.closed_with() == 4400


@pytest.mark.parametrize(
    "frame,code",
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_type"),
        ('{"text": "hi"}', "missing_field"),
        ('{"message": 42}', "bad_type"),
        ('{"message": "   "}', "empty"),
        ('{"message": "' + "x" * 2001 + '"}', "too_long"),
    ],
)
async def test_bad_frames_get_error_and_socket_stays_open(frame, code):
    client, _ = await welcome("/ws/chat/errors/")
    await client.comm.send_to(text_data=frame)
    err = await client.recv()
    assert err["type"] == "chat.error" and err["code"] == code and err["detail"]
    await client.send({"message": "still here"})
    assert (await client.recv())["message"] == "still here"
    assert await database_sync_to_async(Message.objects.filter(room__name="errors").count)() == 1
    await client.close()


async def test_binary_frame_is_bad_type():
    client, _ = await welcome("/ws/chat/binary/")
    await client.comm.send_to(bytes_data=b'{"message": "hi"}')
    err = await client.recv()
    assert err["code"] == "bad_type"
    await client.close()


async def test_max_length_message_is_accepted(settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    client, _ = await welcome("/ws/chat/maxlen/")
    await client.send({"message": "x" * 10})
    assert (await client.recv())["message"] == "x" * 10
    await client.send({"message": "x" * 11})
    assert (await client.recv())["code"] == "too_long"
    await client.close()


@pytest.mark.parametrize("room", ["bad%20name", "dots.dots", "x" * 65, "%C3%A9"])
async def test_invalid_room_is_closed_4400(room):
    client = await Client(f"/ws/chat/{room}/").connect()
    assert await client.closed_with() == 4400


async def test_unknown_path_is_closed_4404():
    client = await Client("/ws/nope/").connect()
    assert await client.closed_with() == 4404


async def test_rate_limit_errors_then_4429(settings):
    settings.CHAT_RATE_BURST = 2
    settings.CHAT_RATE_PER_SEC = 0.01
    settings.CHAT_RATE_MAX_VIOLATIONS = 3
    client, _ = await welcome("/ws/chat/rate/")
    for i in range(2):
        await client.send({"message": f"ok{i}"})
        assert (await client.recv())["type"] == "chat.message"
    for _ in range(3):
        await client.send({"message": "flood"})
        assert (await client.recv())["code"] == "rate_limited"
    assert await client.closed_with() == 4429
    assert await database_sync_to_async(Message.objects.filter(room__name="rate").count)() == 2


async def test_foreign_origin_is_closed_4403():
    client = await Client("/ws/chat/lobby/", headers=[(b"origin", b"http://evil.example")], origin=False).connect()
    assert await client.closed_with() == 4403


async def test_missing_origin_allowed_by_setting(settings):
    settings.WS_ALLOW_MISSING_ORIGIN = True
    client, _ = await welcome("/ws/chat/lobby/", origin=False)
    await client.close()


async def test_missing_origin_refused_when_disallowed(settings):
    settings.WS_ALLOW_MISSING_ORIGIN = False
    client = await Client("/ws/chat/lobby/", origin=False).connect()
    assert await client.closed_with() == 4403


async def test_anonymous_refused_when_disallowed(settings):
    settings.CHAT_ALLOW_ANONYMOUS = False
    client = await Client("/ws/chat/lobby/").connect()
    assert await client.closed_with() == 4401


async def test_anonymous_name_is_stable_per_session(session_cookie_anon):
    cookie = [(b"cookie", f"sessionid={session_cookie_anon}".encode())]
    a, wa = await welcome("/ws/chat/anon/", headers=cookie)
    b, wb = await welcome("/ws/chat/anon/", headers=cookie)
    assert wa["user"] == wb["user"] and wa["user"].startswith("anon-")
    await a.close()
    await b.close()


async def test_two_anonymous_sessions_get_different_names(session_cookie_anon):
    from importlib import import_module

    from django.conf import settings as dj
    from channels.db import database_sync_to_async

    @database_sync_to_async
    def another_session():
        store = import_module(dj.SESSION_ENGINE).SessionStore()
        store["chat_anon"] = True
        store.save()
        return store.session_key

    other = await another_session()
    _, wa = await welcome("/ws/chat/anon2/", headers=[(b"cookie", f"sessionid={session_cookie_anon}".encode())])
    _, wb = await welcome("/ws/chat/anon2/", headers=[(b"cookie", f"sessionid={other}".encode())])
    assert wa["user"] != wb["user"]
