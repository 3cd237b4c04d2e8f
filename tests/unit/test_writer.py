"""The worker's Writer: one statement for many rooms, and a write path that never
waits on Redis. Real Postgres, and a real redis-server of the test's own that it
freezes with SIGSTOP (a hung Redis keeps its connections open)."""
import asyncio
import os
import shutil
import signal
import subprocess
import time

import psycopg
import pytest
from channels.db import database_sync_to_async

from chat.delivery import db, store, writer
from chat.models import Message
from wsworker import registry

from . import orm_reads
from .conftest import free_port, welcome

pytestmark = pytest.mark.django_db(transaction=True)


async def test_messages_in_many_rooms_share_one_statement_with_dense_ids_per_room():
    rooms = [f"many{i}" for i in range(8)]
    clients = [(await welcome(f"/ws/chat/{room}/"))[0] for room in rooms]
    for n in range(3):
        for client in clients:
            await client.send({"message": f"m{n}"})
    for room, client in zip(rooms, clients):
        got = [await client.recv() for _ in range(3)]
        assert [(m["id"], m["message"]) for m in got] == [(1, "m0"), (2, "m1"), (3, "m2")]
        # what was sent live, timestamp included, is what history replays
        assert await store.between_async(room, 1, 3) == got
    rows = await database_sync_to_async(lambda: list(
        Message.objects.filter(room__name__in=rooms).values_list("room__name", "seq", "created_at")))()
    assert sorted((room, seq) for room, seq, _ in rows) == [(r, s) for r in sorted(rooms) for s in (1, 2, 3)]
    # A statement's rows share its timestamp: 24 messages in 8 rooms took a few statements, not 24.
    stamps = {created for *_, created in rows}
    assert len(stamps) <= 6, f"24 messages in 8 rooms took {len(stamps)} statements"
    for client in clients:
        await client.close()


async def _until(condition, what, timeout=5.0):
    """Wait, bounded, until condition() holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def _two_messages_one_statement(client, room: str) -> bool:
    """Send "first", then "second" 0.1 s later; did one statement store both (same created_at)?"""
    await client.send({"message": "first"})
    await asyncio.sleep(0.1)
    await client.send({"message": "second"})
    assert [(await client.recv())["message"] for _ in range(2)] == ["first", "second"]
    stamps = await database_sync_to_async(lambda: dict(
        Message.objects.filter(room__name=room, body__in=["first", "second"]).values_list("body", "created_at")))()
    return stamps["first"] == stamps["second"]


@pytest.mark.parametrize("linger_ms", [0, 500])
async def test_under_load_the_writer_lingers_and_stores_what_arrives_meanwhile_in_one_statement(settings, linger_ms):
    """CHAT_STORE_LINGER_MS: after a statement that stored several messages (load),
    the next one waits, and a message sent meanwhile shares it; on a quiet worker a
    message is stored at once. 0 turns the wait off."""
    settings.CHAT_STORE_LINGER_MS = linger_ms
    client, _ = await welcome("/ws/chat/linger/")
    started = time.monotonic()
    await client.send({"message": "alone"})
    assert (await client.recv())["message"] == "alone"
    assert time.monotonic() - started < 0.4, "a message on a quiet worker was held"
    # Load: the room's row is held by another transaction, so one statement waits
    # and two more messages queue behind it; they are then stored together.
    locker = await psycopg.AsyncConnection.connect(autocommit=True, **db.connect_kwargs(5))
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM chat_room WHERE name = 'linger' FOR UPDATE")
            await client.send({"message": "held"})
            w = writer.writer()
            await _until(lambda: not w.queue and w.task is not None and not w.task.done(),
                         "the held message's statement never started")
            await client.send({"message": "queued 1"})
            await client.send({"message": "queued 2"})
            await _until(lambda: len(w.queue) == 2, "the two messages never queued behind the held one")
    finally:
        await locker.close()
    assert [(await client.recv())["message"] for _ in range(3)] == ["held", "queued 1", "queued 2"]
    await _until(lambda: w.task.done(), "the Writer never went idle")
    # The next statement lingers: a message sent 0.1 s after the first one joins it.
    shared = await _two_messages_one_statement(client, "linger")
    if linger_ms:
        assert shared, "the message sent during the wait took a statement of its own"
    else:
        assert not shared, "with CHAT_STORE_LINGER_MS=0 a message waited for the next one"
    await client.close()



@pytest.mark.parametrize("linger_ms", [0, 300])
async def test_steady_traffic_makes_the_writer_wait_once_a_message_per_wait_arrives(settings, linger_ms):
    """Messages that never share a statement, but arrive at several per
    CHAT_STORE_LINGER_MS over the last second: the Writer starts waiting, and a
    message sent during the wait shares the statement of the one before it."""
    settings.CHAT_STORE_LINGER_MS = linger_ms
    client, _ = await welcome("/ws/chat/steady/")
    sent, waited = {}, None
    for n in range(12):
        sent[n] = time.monotonic()
        await client.send({"message": f"m{n}"})
        assert (await client.recv())["message"] == f"m{n}"  # one at a time: never two per statement
        if time.monotonic() - sent[n] >= 0.25:
            waited = n
            break
        await asyncio.sleep(0.05)
    if not linger_ms:
        assert waited is None, "with CHAT_STORE_LINGER_MS=0 a message was held"
        await client.close()
        return
    assert waited is not None and waited >= 2, f"the Writer waited from message {waited}: not on steady traffic"
    # Still steady: the next message waits again, and one sent 0.1 s after it joins it.
    assert await _two_messages_one_statement(client, "steady"), \
        "the message sent during the wait took a statement of its own"
    await client.close()


def test_persist_batch_numbers_each_room_in_order():
    first = store.persist_batch([("b1", None, "u", "a"), ("b2", None, "u", "x"), ("b1", None, "u", "b")])
    assert [(m["room"], m["id"], m["message"]) for m in first] == [("b1", 1, "a"), ("b2", 1, "x"), ("b1", 2, "b")]
    again = store.persist_batch([("b2", None, "u", "y"), ("b1", None, "u", "c")])
    assert [(m["room"], m["id"]) for m in again] == [("b2", 2), ("b1", 3)]
    assert orm_reads.heads(["b1", "b2", "never"]) == {"b1": 3, "b2": 2}


@pytest.fixture
def own_redis(tmp_path, settings):
    """A redis-server for this test alone, as the channel layer; SIGCONT at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    layers = {**settings.CHANNEL_LAYERS}
    layers["default"] = {**layers["default"], "CONFIG": {**layers["default"]["CONFIG"]}}
    layers["default"]["CONFIG"]["hosts"] = [{**layers["default"]["CONFIG"]["hosts"][0],
                                             "address": f"redis://127.0.0.1:{port}/0"}]
    settings.CHANNEL_LAYERS = layers
    yield proc
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=10)


async def test_a_frozen_redis_never_delays_the_senders_ack(own_redis, settings):
    settings.CHAT_PUBLISH_TIMEOUT_MS = 300
    sender, _ = await welcome("/ws/chat/frozen/")
    dropped = registry.refusals["publish dropped"]
    os.kill(own_redis.pid, signal.SIGSTOP)
    acks = []
    for n in range(5):
        started = time.monotonic()
        await sender.send({"message": f"during {n}"})
        frame = await sender.recv(timeout=5)
        acks.append(time.monotonic() - started)
        assert (frame["id"], frame["message"]) == (n + 1, f"during {n}")
    # Stored and acknowledged at once, though no publish could go through.
    assert max(acks) < 0.3, f"acks waited on Redis: {acks}"
    assert await database_sync_to_async(orm_reads.heads)(["frozen"]) == {"frozen": 5}
    deadline = time.monotonic() + 5
    while registry.refusals["publish dropped"] == dropped:
        assert time.monotonic() < deadline, "the stuck publish was never given up"
        await __import__("asyncio").sleep(0.05)
    os.kill(own_redis.pid, signal.SIGCONT)
    await sender.close()


def test_store_batch_matches_a_model_over_many_rooms_resends_and_batches():
    """Many rooms per statement (names whose order differs between collations),
    resends within a batch and across batches, mixed with new rows: every row
    gets what a one-by-one store would give it, and the table holds exactly that;
    every message as sent live (timestamp included) is the message history replays."""
    import random

    rnd = random.Random(14)
    names = ["B", "a", "b", "é", "Z-9", "a_b", "ab", "Ω"]
    last = {}  # room -> last id
    stored = {}  # (room, cid) -> (id, username, text)
    for batch_no in range(12):
        items, expect = [], []
        for n in range(rnd.randint(1, 40)):
            room = rnd.choice(names)
            cid = rnd.choice([None, None, f"c{rnd.randint(0, 30)}"])
            # quotes, backslashes, non-BMP and separator characters: the batch travels as JSON text
            user, text = f"u{batch_no}", f't{batch_no}.{n} "q" \\ \\n \u00e9 \U0001f600 \u2028'
            items.append((room, None, user, text, cid))
            if cid is not None and (room, cid) in stored:
                sid, suser, stext = stored[(room, cid)]
                expect.append((room, sid, suser, stext, True))
                continue
            last[room] = last.get(room, 0) + 1
            if cid is not None:
                stored[(room, cid)] = (last[room], user, text)
            expect.append((room, last[room], user, text, False))
        got = store.store_batch(items)
        assert [(m["room"], m["id"], m["username"], m["message"], dup) for m, dup in got] == expect
        for m, _dup in got:
            assert orm_reads.between(m["room"], m["id"], m["id"]) == [m]
    assert orm_reads.heads(names) == last
    table = sorted(Message.objects.values_list("room__name", "seq"))
    assert table == sorted((room, seq) for room, top in last.items() for seq in range(1, top + 1))
