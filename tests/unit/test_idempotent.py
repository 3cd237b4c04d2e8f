"""Idempotent sends and the application heartbeat, as a client sees them.

A message that carries a client_msg_id is stored once per room, whichever
socket or worker receives it and however often: the resend is acknowledged with
the ORIGINAL id, no second row exists, and ids stay dense. Real Postgres and Redis.
"""
import uuid

import pytest
from channels.db import database_sync_to_async

from chat.delivery import store
from chat.models import Message

from . import orm_reads
from .conftest import welcome

pytestmark = pytest.mark.django_db(transaction=True)


def rows(room):
    return list(Message.objects.filter(room__name=room).order_by("seq").values_list("seq", "body", "client_msg_id"))


async def test_resend_with_same_client_id_gets_original_id_and_one_row():
    a, _ = await welcome("/ws/chat/idem/")
    cid = str(uuid.uuid4())
    await a.send({"message": "hello", "client_msg_id": cid})
    msg, ack = await a.recv(), await a.recv()
    assert (msg["type"], msg["id"], msg["message"]) == ("chat.message", 1, "hello")
    assert ack == {"type": "chat.ack", "client_msg_id": cid, "id": 1}
    await a.close()
    # A new connection (another anon name, as after a reconnect) resends it: same id, no new row.
    b, wel = await welcome("/ws/chat/idem/?after=1")
    await b.send({"message": "hello", "client_msg_id": cid})
    assert await b.recv() == {"type": "chat.ack", "client_msg_id": cid, "id": 1}
    await b.send({"message": "next", "client_msg_id": str(uuid.uuid4())})
    nxt = await b.recv()
    assert (nxt["id"], nxt["message"]) == (2, "next"), "ids stay dense after a duplicate"
    assert (await b.recv())["type"] == "chat.ack"
    assert [(s, body) for s, body, _ in await database_sync_to_async(rows)("idem")] == [(1, "hello"), (2, "next")]
    await b.close()


async def test_other_sockets_never_see_the_client_id_nor_a_resend():
    watcher, _ = await welcome("/ws/chat/idem2/")
    sender, _ = await welcome("/ws/chat/idem2/")
    cid = str(uuid.uuid4())
    await sender.send({"message": "once", "client_msg_id": cid})
    seen = await watcher.recv()
    assert seen["message"] == "once" and "client_msg_id" not in seen
    await sender.send({"message": "once", "client_msg_id": cid})
    await sender.send({"message": "after"})
    nxt = await watcher.recv()
    assert (nxt["id"], nxt["message"]) == (2, "after"), f"the resend reached another socket: {nxt}"
    await watcher.close()
    await sender.close()


def test_store_batch_skips_repeats_within_and_across_batches_before_allocating_ids():
    out = store.store_batch([("sb", None, "u", "a", "k1"), ("sb", None, "u", "b", None),
                             ("sb", None, "u", "a again", "k1"), ("sb2", None, "u", "x", "k1")])
    assert [(m["room"], m["id"], m["message"], dup) for m, dup in out] == [
        ("sb", 1, "a", False), ("sb", 2, "b", False), ("sb", 1, "a", True), ("sb2", 1, "x", False)]
    again = store.store_batch([("sb", None, "v", "new", "k2"), ("sb", None, "other-name", "a", "k1")])
    assert [(m["id"], m["username"], dup) for m, dup in again] == [(3, "v", False), (1, "u", True)]
    assert orm_reads.heads(["sb", "sb2"]) == {"sb": 3, "sb2": 1}


def test_a_concurrent_insert_of_the_same_client_id_fails_retryably_then_reads_as_duplicate():
    """Two workers race on one client id: the second statement waits on the room row,
    hits the unique index when the first commits, and its rerun returns the original."""
    import threading

    from django.db import connection, transaction

    first_stored, release, outcome = threading.Event(), threading.Event(), {}

    def first():
        try:
            with transaction.atomic():
                outcome["first"] = store.store_batch([("race", None, "w1", "same", "cid-race")])
                first_stored.set()
                release.wait(10)
        finally:
            connection.close()

    def second():
        try:
            first_stored.wait(10)
            try:
                store.store_batch([("race", None, "w2", "same", "cid-race")])
            except Exception as exc:  # noqa: BLE001  (what the Writer sees)
                outcome["error"] = exc
            outcome["rerun"] = store.store_batch([("race", None, "w2", "same", "cid-race")])
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_stored.wait(10)
    # The second statement is now blocked on the room row: let the first commit.
    threading.Timer(0.5, release.set).start()
    for t in threads:
        t.join(20)
    # What the Writer retries (chat.delivery.writer.Writer._store): a unique violation.
    from psycopg import errors as pg_errors

    assert isinstance(outcome["error"].__cause__, pg_errors.UniqueViolation), repr(outcome["error"])
    (orig, dup0), = outcome["first"]
    (again, dup1), = outcome["rerun"]
    assert (orig["id"], dup0, again["id"], again["username"], dup1) == (1, False, 1, "w1", True)
    assert [(s, b) for s, b, _ in rows("race")] == [(1, "same")]
    assert store.persist("race", None, "w", "next")["id"] == 2, "the failed statement used no id"


@pytest.mark.parametrize("bad", ["", "x" * 65, "has space", "ünï", 7, None, ["a"]])
async def test_bad_client_id_is_bad_type_and_socket_stays_open(bad):
    c, _ = await welcome("/ws/chat/idembad/")
    await c.send({"message": "hi", "client_msg_id": bad})
    err = await c.recv()
    assert (err["type"], err["code"]) == ("chat.error", "bad_type")
    await c.send({"message": "still open"})
    assert (await c.recv())["message"] == "still open"
    await c.close()


async def test_ping_is_answered_with_pong():
    c, _ = await welcome("/ws/chat/pinger/")
    await c.send({"type": "ping"})
    assert await c.recv() == {"type": "pong"}
    await c.close()
