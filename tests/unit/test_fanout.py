"""The per-worker Room (chat.delivery.fanout): ordering, the history cache and Redis resync,
through the real ASGI stack against real Postgres and Redis."""
import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import protocol
from chat.delivery import fanout
from wsworker import layerwatch
from chat.models import Message

from .conftest import persist, welcome

pytestmark = pytest.mark.django_db(transaction=True)


async def _publish(msg):
    """What another worker does after persisting: one PUBLISH to the room group."""
    await get_channel_layer().group_send(
        fanout.group_name(msg["room"]), {"type": fanout.MESSAGE_TYPE, "id": msg["id"], "text": protocol.dumps(msg)}
    )


# framed: sockets with wsworker's raw-frame path, where the next id of an idle Room is
# handed over on the spot (Room._deliver_soon); otherwise the Room's deliver loop does it.
@pytest.mark.parametrize("framed", [False, True])
async def test_out_of_order_publishes_reach_sockets_in_order(settings, framed):
    # Longer than the whole test: any gap must be closed by Redis, not by Postgres.
    settings.CHAT_REORDER_WAIT_MS = 60_000
    room = f"reorder{int(framed)}"
    client, frame = await welcome(f"/ws/chat/{room}/", framed=framed)
    first = await persist(room, None, "w1", "first")
    second = await persist(room, None, "w2", "second")
    third = await persist(room, None, "w3", "third")
    await _publish(second)
    await _publish(first)
    await _publish(third)
    got = [await client.recv() for _ in range(3)]
    assert [(m["id"], m["message"]) for m in got] == [(1, "first"), (2, "second"), (3, "third")]
    await _publish(first)  # a repeat of a delivered id is dropped
    fourth = await persist(room, None, "w4", "fourth")
    await _publish(fourth)
    assert (await client.recv())["id"] == 4
    await client.close()


@pytest.mark.parametrize("framed", [False, True])
async def test_a_publish_redis_never_delivered_is_read_from_postgres_after_the_wait(settings, framed):
    settings.CHAT_REORDER_WAIT_MS = 100
    room = f"lostpub{int(framed)}"
    client, _ = await welcome(f"/ws/chat/{room}/", framed=framed)
    await persist(room, None, "w1", "never published")
    await _publish(await persist(room, None, "w2", "published"))
    got = [await client.recv() for _ in range(2)]
    assert [(m["id"], m["message"]) for m in got] == [(1, "never published"), (2, "published")]
    await _publish(await persist(room, None, "w3", "after the gap"))
    assert (await client.recv())["message"] == "after the gap"
    await client.close()


async def test_an_idle_room_writes_what_one_loop_pass_brought_at_once_without_waking_its_loop():
    """With frames, a Room whose deliver loop sleeps hands the messages Redis brought in
    one loop pass to its sockets in one write per socket, from one callback: its
    deliver loop's task is never woken."""
    client, _ = await welcome("/ws/chat/nowait/", framed=True)
    room = fanout.rooms()["nowait"]
    await asyncio.wait_for(_until(lambda: room.idle), 5)
    first = await persist("nowait", None, "w1", "one")
    second = await persist("nowait", None, "w2", "two")
    for msg in (first, second):
        room._on_event({"type": fanout.MESSAGE_TYPE, "id": msg["id"], "text": protocol.dumps(msg)})
    assert not room.wake.is_set()
    await asyncio.wait_for(_until(lambda: client.writes), 5)
    assert client.writes == [2] and room.position == second["id"] and not room.wake.is_set()
    assert [(await client.recv())["message"] for _ in range(2)] == ["one", "two"]
    await client.close()


async def test_a_socket_refusing_pre_built_frames_resumes_and_the_others_get_the_message():
    """A socket the server will not give pre-built frames (e.g. one with compression)
    cannot get an idle Room's run without awaiting: it is closed with 1012 to resume
    from its last id, and the room's other sockets get the message as usual."""
    other, _ = await welcome("/ws/chat/refusing/", framed=True)
    refusing, _ = await welcome("/ws/chat/refusing/", framed=True, refuse_frames=True)
    room = fanout.rooms()["refusing"]
    await asyncio.wait_for(_until(lambda: room.idle and len(room.sockets) == 2), 5)
    msg = await persist("refusing", None, "w1", "one")
    room._on_event({"type": fanout.MESSAGE_TYPE, "id": msg["id"], "text": protocol.dumps(msg)})
    assert (await other.recv())["message"] == "one"
    assert await refusing.closed_with() == protocol.CLOSE_RESTART
    await other.close()


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)


async def test_second_connect_is_served_from_the_worker_cache():
    a, _ = await welcome("/ws/chat/cached/")
    for n in range(3):
        await a.send({"message": f"m{n}"})
        assert (await a.recv())["message"] == f"m{n}"
    # Rows gone from Postgres: only the worker's cache can still show them.
    await database_sync_to_async(Message.objects.filter(room__name="cached").delete)()
    b, frame = await welcome("/ws/chat/cached/")
    assert [m["message"] for m in frame["history"]] == ["m0", "m1", "m2"] and frame["last_id"] == 3
    c, resumed = await welcome("/ws/chat/cached/?after=1")
    assert [m["id"] for m in resumed["history"]] == [2, 3] and resumed["last_id"] == 3
    for client in (a, b, c):
        await client.close()


async def test_resume_older_than_the_cache_reads_postgres(settings):
    settings.CHAT_ROOM_CACHE = 2
    settings.CHAT_HISTORY_SIZE = 2
    a, _ = await welcome("/ws/chat/oldresume/")
    for n in range(5):
        await a.send({"message": f"m{n}"})
        await a.recv()
    b, frame = await welcome("/ws/chat/oldresume/?after=0")
    assert [m["id"] for m in frame["history"]] == [1, 2, 3, 4, 5]
    await a.close()
    await b.close()


async def test_redis_resync_keeps_sockets_open_and_delivers_what_was_missed():
    watcher, _ = await welcome("/ws/chat/resync/")
    sender, _ = await welcome("/ws/chat/resync/")
    # Stored while this worker's subscription was dead (as during a Redis restart).
    await persist("resync", None, "ghost", "during outage")
    await layerwatch._resync("test", "restarted")
    assert (await watcher.recv())["message"] == "during outage"
    # Live traffic flows on the new subscription, and nobody was disconnected.
    await sender.send({"message": "after"})
    got = await watcher.recv()
    assert (got["id"], got["message"]) == (2, "after")
    assert (await sender.recv())["id"] == 1
    await watcher.close()
    await sender.close()


async def _subscribers(group):
    from django.conf import settings
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        ((_, n),) = await client.pubsub_numsub(f"{prefix}__group__{group}")  # channels_redis's naming
        return n
    finally:
        await client.aclose()


async def test_one_redis_subscription_per_room_per_worker_gone_with_the_last_socket():
    group = fanout.group_name("leaving")
    sockets = [(await welcome("/ws/chat/leaving/"))[0] for _ in range(3)]
    assert await _subscribers(group) == 1
    for client in sockets:
        await client.close()

    async def unsubscribed():
        while await _subscribers(group):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(unsubscribed(), 5)


async def test_a_room_this_worker_cannot_keep_up_with_is_shed_with_1013(settings):
    from wsworker import registry

    settings.CHAT_REORDER_WAIT_MS = 60_000  # id 1 never comes: everything after it waits
    settings.CHAT_ROOM_MAX_BACKLOG = 3
    client, _ = await welcome("/ws/chat/backlog/")
    await persist("backlog", None, "w1", "never published")
    before = registry.refusals["close 1013 room backlog"]
    for n in range(4):
        await _publish(await persist("backlog", None, "w2", f"m{n}"))
    assert await client.closed_with() == 1013
    assert registry.refusals["close 1013 room backlog"] == before + 1
    # The room is usable again: a new socket resumes and gets everything, in order.
    again, frame = await welcome("/ws/chat/backlog/?after=0")
    assert [m["id"] for m in frame["history"]] == [1, 2, 3, 4, 5]
    await again.close()


async def test_a_burst_is_stored_in_few_statements_in_send_order():
    a, _ = await welcome("/ws/chat/burst/")
    b, _ = await welcome("/ws/chat/burst/")
    for n in range(20):
        await a.send({"message": f"a{n}"})
        await b.send({"message": f"b{n}"})
    got = [await a.recv() for _ in range(40)]
    assert [m["id"] for m in got] == list(range(1, 41))
    # Each sender's messages keep their order, and both sockets see the same sequence.
    assert [m["message"] for m in got if m["message"][0] == "a"] == [f"a{n}" for n in range(20)]
    assert [m["id"] for m in [await b.recv() for _ in range(40)]] == list(range(1, 41))
    # Group commit: rows stored by one statement share its timestamp.
    stamps = await database_sync_to_async(
        lambda: set(Message.objects.filter(room__name="burst").values_list("created_at", flat=True)))()
    assert len(stamps) <= 10, f"40 messages took {len(stamps)} statements"
    await a.close()
    await b.close()


async def test_a_lost_last_message_is_delivered_once_the_room_goes_quiet():
    client, _ = await welcome("/ws/chat/quiet/")
    await client.send({"message": "first"})
    assert (await client.recv())["id"] == 1
    # Stored, its publish lost, and no later message will reveal the gap.
    await persist("quiet", None, "w2", "trailing")
    got = await client.recv(timeout=fanout.QUIET_CHECK_SECONDS + 5)
    assert (got["id"], got["message"]) == (2, "trailing")
    await client.close()


@pytest.fixture
def reconnect_after():
    """The test drops every connection of the app, the test thread's too: give that one
    back before pytest-django's teardown flushes the tables through it."""
    yield
    from django.db import connection

    connection.close()


async def test_a_gap_fill_that_loses_its_database_connection_is_retried_and_sockets_stay_open(
        settings, reconnect_after):
    """Postgres drops every connection of the app (as in a restart) just before a room
    must read a gap: the room retries with backoff instead of closing its sockets."""
    import psycopg
    from django.db import connection

    settings.CHAT_REORDER_WAIT_MS = 50
    client, _ = await welcome("/ws/chat/pgdrop/")
    await persist("pgdrop", None, "w1", "never published")
    second = await persist("pgdrop", None, "w2", "published")
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"],
                         dbname=db["NAME"], autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert killed >= 1, "the app held no pooled connection to drop"
    await _publish(second)
    got = [await client.recv(timeout=10) for _ in range(2)]
    assert [(m["id"], m["message"]) for m in got] == [(1, "never published"), (2, "published")]
    await client.send({"message": "still open"})
    assert (await client.recv())["message"] == "still open"
    await client.close()
