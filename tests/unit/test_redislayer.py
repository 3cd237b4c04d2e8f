"""Pipelined publishes (chat.delivery.redislayer) reach the same subscribers as
group_send, and the channels_redis internals they use still exist."""
import asyncio
import importlib

import pytest
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import decode_hosts
from django.conf import settings

from chat.delivery.redislayer import PRIVATE_INTERNALS, listen, publish_many


@pytest.mark.parametrize("where,attr", PRIVATE_INTERNALS)
def test_channels_redis_internal_still_exists(where, attr):
    module, _, name = where.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    found = hasattr(cls, attr) or f"self.{attr} =" in importlib.import_module(module).__loader__.get_source(module)
    assert found, f"{where}.{attr} is gone: chat.delivery.redislayer needs it (see PRIVATE_INTERNALS)"


async def test_publish_many_reaches_group_members_in_order():
    layer = get_channel_layer()
    channel = await layer.new_channel(prefix="pipetest.")
    await layer.group_add("pipe-a", channel)
    await layer.group_add("pipe-b", channel)
    events = [(("pipe-a" if n % 2 else "pipe-b"), {"type": "chat.message", "id": n, "text": f"t{n}"}) for n in range(40)]
    await publish_many(layer, events)
    got = [await layer.receive(channel) for _ in range(40)]
    assert [e["id"] for e in got] == list(range(40))
    assert got[7] == {"type": "chat.message", "id": 7, "text": "t7"}
    await layer.group_discard("pipe-a", channel)
    await layer.group_discard("pipe-b", channel)


async def test_publish_many_still_publishes_after_redis_forgot_its_script():
    """A restarted Redis has no scripts: the publish loads it again, nothing is lost."""
    from redis import asyncio as aioredis

    layer = get_channel_layer()
    channel = await layer.new_channel(prefix="pipetest.")
    await layer.group_add("pipe-c", channel)
    await publish_many(layer, [("pipe-c", {"type": "chat.message", "id": 1, "text": "before"})])
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    await publish_many(layer, [("pipe-c", {"type": "chat.message", "id": n, "text": "after"}) for n in (2, 3)])
    got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]
    assert [e["id"] for e in got] == [1, 2, 3]
    await layer.group_discard("pipe-c", channel)


@pytest.fixture
async def layer_without_scripting(monkeypatch):
    """The project's layer, logged in as a Redis ACL user that may do anything but run scripts."""
    from urllib.parse import urlsplit, urlunsplit

    from redis import asyncio as aioredis

    from chat.delivery import redislayer

    monkeypatch.setattr(redislayer, "_scripts_refused", False)
    admin = aioredis.Redis.from_url(settings.REDIS_URL)
    await admin.execute_command("ACL", "SETUSER", "noscripts", "reset", "on", ">noscripts-pw", "~*", "&*", "+@all", "-@scripting")
    url = urlsplit(settings.REDIS_URL)
    address = urlunsplit(url._replace(netloc=f"noscripts:noscripts-pw@{url.hostname}:{url.port or 6379}"))
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    hosts = [{**host, "address": address} for host in decode_hosts(config["hosts"])]
    layer = RedisPubSubChannelLayer(**{**config, "hosts": hosts})
    try:
        yield layer
    finally:
        await layer.flush()
        await admin.execute_command("ACL", "DELUSER", "noscripts")
        await admin.aclose()


async def test_a_redis_user_without_scripting_still_publishes_at_once_and_is_told_once(layer_without_scripting, caplog):
    """NOPERM on the script: the batch and every later one go out as a pipeline, in order;
    one warning names what to allow."""
    layer = get_channel_layer()
    channel = await layer.new_channel(prefix="pipetest.")
    await layer.group_add("pipe-d", channel)
    await publish_many(layer_without_scripting, [("pipe-d", {"type": "chat.message", "id": n, "text": "x"}) for n in (1, 2)])
    await publish_many(layer_without_scripting, [("pipe-d", {"type": "chat.message", "id": 3, "text": "y"})])
    got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]
    assert [e["id"] for e in got] == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if "will not run the publish script" in r.getMessage()]
    assert len(warnings) == 1 and "+@scripting" in warnings[0], warnings
    await layer.group_discard("pipe-d", channel)


@pytest.fixture
def redis_without_evalsha(tmp_path, monkeypatch):
    """A real Redis whose config renames EVALSHA away, as some hardened or managed ones do."""
    import subprocess

    from chat.delivery import redislayer
    from .conftest import free_port

    monkeypatch.setattr(redislayer, "_scripts_refused", False)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), "--rename-command", "EVALSHA", ""],
                            stdout=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_redis_without_evalsha_still_gets_every_publish(redis_without_evalsha, caplog):
    """EVALSHA renamed away answers "unknown command": published as a pipeline instead, in order."""
    from redis import asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    url = f"redis://127.0.0.1:{redis_without_evalsha}/0"
    client = aioredis.Redis.from_url(url)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await client.ping()
            break
        except RedisConnectionError:
            assert asyncio.get_running_loop().time() < deadline, "the test Redis did not start"
            await asyncio.sleep(0.05)
    await client.aclose()
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer = RedisPubSubChannelLayer(**{**config, "hosts": [{"address": url, "protocol": 2}]})
    try:
        channel = await layer.new_channel(prefix="pipetest.")
        await layer.group_add("pipe-e", channel)
        await publish_many(layer, [("pipe-e", {"type": "chat.message", "id": n, "text": "z"}) for n in (1, 2, 3)])
        got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(3)]
        assert [e["id"] for e in got] == [1, 2, 3]
        assert any("unknown command" in r.getMessage() for r in caplog.records
                   if "will not run the publish script" in r.getMessage())
    finally:
        await layer.flush()


async def _redis_subscriptions(*groups):
    """(subscribers of each group's channel, every channel this Redis has subscribers on)."""
    from django.conf import settings
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        counts = [n for _name, n in await client.pubsub_numsub(*(f"{prefix}__group__{g}" for g in groups))]
        return counts, {c.decode() for c in await client.pubsub_channels()}
    finally:
        await client.aclose()


async def _until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_listen_hands_each_group_message_to_the_callback_in_order_with_one_subscribe():
    layer = get_channel_layer()
    before = (await _redis_subscriptions("listen-a"))[1]
    got, arrived = [], asyncio.Event()

    def on_event(event):
        got.append(event)
        if len(got) == 30:
            arrived.set()

    listener = await listen(layer, "listen-a", on_event)
    counts, channels = await _redis_subscriptions("listen-a")
    # The group's channel and nothing else: no per-listener channel to SUBSCRIBE.
    assert counts == [1] and len(channels - before) == 1
    await publish_many(layer, [("listen-a", {"type": "chat.message", "id": n, "text": f"t{n}"}) for n in range(30)])
    await asyncio.wait_for(arrived.wait(), 5)
    assert [e["id"] for e in got] == list(range(30)) and got[3]["text"] == "t3"

    await listener.stop()
    await _until(lambda: _unsubscribed("listen-a"))
    await layer.group_send("listen-a", {"type": "chat.message", "id": 99, "text": "late"})
    assert [e["id"] for e in got] == list(range(30))


async def _unsubscribed(group):
    return (await _redis_subscriptions(group))[0] == [0]


async def test_a_callback_that_raises_loses_that_message_only(caplog):
    layer = get_channel_layer()
    got, arrived = [], asyncio.Event()

    def on_event(event):
        if event["id"] == 1:
            raise ValueError("bad message")
        got.append(event["id"])
        if event["id"] == 2:
            arrived.set()

    listener = await listen(layer, "listen-b", on_event)
    await publish_many(layer, [("listen-b", {"type": "chat.message", "id": n, "text": ""}) for n in range(3)])
    # channels_redis's reader sleeps a second after an exception reaches it; within
    # that second the message after the bad one must still arrive.
    await asyncio.wait_for(arrived.wait(), 0.8)
    assert got == [0, 2]
    assert "group listen-b: handling a message failed" in caplog.text
    await listener.stop()


async def test_two_listeners_share_the_group_until_the_last_one_stops():
    layer = get_channel_layer()
    first = await listen(layer, "listen-c", lambda e: None)
    second = await listen(layer, "listen-c", lambda e: None)
    assert (await _redis_subscriptions("listen-c"))[0] == [1]
    await first.stop()
    assert (await _redis_subscriptions("listen-c"))[0] == [1]
    await second.stop()
    await _until(lambda: _unsubscribed("listen-c"))


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def layer_speaking(request):
    """The project's layer, speaking RESP2 (the project's setting) or RESP3 (redis-py 8's
    default, where pub/sub messages arrive as push notifications)."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    hosts = [{**host, "protocol": request.param} for host in decode_hosts(config["hosts"])]
    layer = RedisPubSubChannelLayer(**{**config, "hosts": hosts})
    yield layer
    await layer.flush()


def test_the_layer_speaks_resp2():
    """RESP3 sends every pub/sub message through redis-py's push handlers, which format
    a debug line per message (settings._layer_connection)."""
    assert all(host.get("protocol") == 2 for host in decode_hosts(settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]))


async def test_a_burst_is_handed_over_without_a_read_per_message_and_unsubscribes_still_land(layer_speaking):
    """receive_loop(): what Redis sent in one go reaches the callbacks in order with
    far fewer get_message() calls than messages; an UNSUBSCRIBE answered in the
    middle of a burst still updates redis-py's subscription state."""
    layer = layer_speaking
    got = {"burst-a": [], "burst-b": []}
    done = asyncio.Event()

    b_done = asyncio.Event()

    def collect(group):
        def on_event(event):
            got[group].append(event["id"])
            if len(got["burst-a"]) == 300:
                done.set()
            if len(got["burst-b"]) == 200:
                b_done.set()
        return on_event

    a = await listen(layer, "burst-a", collect("burst-a"))
    b = await listen(layer, "burst-b", collect("burst-b"))
    loop_layer = layer._get_layer()
    pubsub = loop_layer._get_shard(loop_layer._get_group_channel_name("burst-a"))._pubsub
    reads = []
    real = pubsub.get_message

    async def counting(*args, **kwargs):
        message = await real(*args, **kwargs)
        if message is not None:
            reads.append(1)
        return message

    pubsub.get_message = counting
    try:
        await publish_many(layer, [(f"burst-{'ab'[n % 2]}", {"type": "chat.message", "id": n, "text": "x" * 50})
                                   for n in range(400)])
        await asyncio.wait_for(b_done.wait(), 5)
        stopping = asyncio.ensure_future(b.stop())  # its UNSUBSCRIBE answer arrives among the next burst
        await publish_many(layer, [("burst-a", {"type": "chat.message", "id": n, "text": ""}) for n in range(400, 500)])
        await stopping
        await asyncio.wait_for(done.wait(), 5)
        assert got["burst-a"] == list(range(0, 400, 2)) + list(range(400, 500))
        assert got["burst-b"] == list(range(1, 400, 2))
        assert len(reads) < 100, f"{len(reads)} get_message() calls for 500 messages"
        channel_b = layer._get_layer()._get_group_channel_name("burst-b").encode()
        await _until(lambda: _unsubscribed("burst-b"))
        await _until(lambda: _async(channel_b not in pubsub.channels))
    finally:
        pubsub.get_message = real
        await a.stop()


async def test_a_quiet_subscription_reads_about_once_a_second_and_a_message_still_lands_at_once():
    """The shard's reader does not poll Redis ten times a second while nothing
    arrives (channels_redis's 0.1 s), and a message still ends its wait."""
    layer = get_channel_layer()
    got = asyncio.Event()
    listener = await listen(layer, "quiet-a", lambda event: got.set())
    loop_layer = layer._get_layer()
    pubsub = loop_layer._get_shard(loop_layer._get_group_channel_name("quiet-a"))._pubsub
    reads = []
    real = pubsub.get_message

    async def counting(*args, **kwargs):
        reads.append(kwargs.get("timeout"))
        return await real(*args, **kwargs)

    pubsub.get_message = counting
    try:
        await asyncio.sleep(2.5)  # the quiet spell being measured, not a wait for a condition
        # one a second, on the worker's tick (wsworker.ticks): the first ends at the next
        # tick, and the subscription's confirmation ends one more early (25 at 0.1 s)
        assert len(reads) <= 5, f"{len(reads)} reads in 2.5 quiet seconds"
        assert all(t > 0.9 for t in reads[2:]), reads
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await publish_many(layer, [("quiet-a", {"type": "chat.message", "id": 1, "text": "x"})])
        await asyncio.wait_for(got.wait(), 5)
        assert loop.time() - sent < 0.5
    finally:
        pubsub.get_message = real
        await listener.stop()


async def _async(value):
    return value
