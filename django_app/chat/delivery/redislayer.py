"""Many PUBLISHes in one round trip, and group messages without a queue and a task
per subscriber, on channels_redis's own connections.

channels_redis's group_send takes the shard's lock and awaits one PUBLISH, a
round trip each: the Writer stores a batch of messages in one statement, then
would pay one round trip per message to publish them. publish_many() sends a
whole batch per shard as ONE command instead, a server-side script that runs
PUBLISH for each (channel, message) pair, in order (PUBLISH_SCRIPT, through
redis-py's Script: EVALSHA, loaded again by itself after a Redis restart): same
channel names, same serialisation, same shard choice and the same connection
(so Sentinel and sharding settings apply unchanged). A pipeline of PUBLISHes
did the same in one round trip, but redis-py packs, wraps and parses each
command of a pipeline in Python: the script costs a worker 4-6 us less per
message and ~20 us less per batch (docs/benchmarks.md). Scripting must be
allowed for the layer's Redis user (the default; an ACL needs +@scripting):
when Redis refuses the script (NOPERM, or EVALSHA renamed away: unknown
command), the worker says so once and publishes with such a pipeline from then
on (_publish_pipelined), so messages still go out at once.

listen() subscribes a callback to a group. channels_redis hands each message to
a per-channel asyncio.Queue that a task must await (layer.receive): per message
and per room on each worker, a queue hop and a task wake, plus a task, a queue
and a SUBSCRIBE of a channel nobody publishes to per room. With many small
rooms those are paid per message. listen() puts an object with the queue's
put_nowait() where channels_redis looks the channel up, so the shard's reader
task hands each message straight to the callback.

The shard's reader itself (channels_redis's _do_receiving) calls redis-py's
get_message() once per message: a timeout context, a retry wrapper and a
health check around every read, 8-19 us per message measured here even when
Redis sent a whole burst in one packet. receive_loop() is that loop, plus: after a message,
the replies already parsed from the same read are handed over right away, each
through redis-py's own handle_message(), as its parse_response would.

That needs channels_redis and redis-py internals, all named in PRIVATE_INTERNALS
and pinned by tests/unit/test_redislayer.py, which fails when an upgrade changes
one. Any other layer gets one group_send per message.
"""
import asyncio
import functools
import logging
import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import NoPermissionError, ResponseError

from wsworker import ticks

logger = logging.getLogger(__name__)

PRIVATE_INTERNALS = (
    ("channels_redis.pubsub.RedisPubSubChannelLayer", "_get_layer"),
    ("channels_redis.pubsub.RedisPubSubLoopLayer", "_get_group_channel_name"),
    ("channels_redis.pubsub.RedisPubSubLoopLayer", "_get_shard"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_lock"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_ensure_redis"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_redis"),
    # listen(): the reader calls channels[name].put_nowait(data) for each group member
    ("channels_redis.pubsub.RedisPubSubLoopLayer", "channels"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_receive_message"),
    # receive_loop(): replaces the shard's reader, reads what is already parsed
    ("channels_redis.pubsub.RedisPubSubLoopLayer", "_shards"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_do_receiving"),
    ("channels_redis.pubsub.RedisSingleShardConnection", "_pubsub"),
    ("redis._parsers.hiredis._AsyncHiredisParser", "_reader"),
    ("redis._parsers.hiredis._AsyncHiredisParser", "_hiredis_PushNotificationType"),
    ("redis._parsers.hiredis._AsyncHiredisParser", "handle_push_response"),
    ("redis.asyncio.client.PubSub", "health_check_response"),
    ("redis.asyncio.connection.AbstractConnection", "next_health_check"),
)

DRAIN_MAX = 1000  # replies handed over per message read, before the loop reads again


# ARGV: channel, message, channel, message, ... Returns how many it published.
PUBLISH_SCRIPT = """
for i = 1, #ARGV, 2 do
    redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""
_publish_script = None  # redis.commands.core.AsyncScript: its sha, run on each shard's client
# Set for good (this process, every shard) once a Redis would not run the script (_script_refused).
_scripts_refused = False


async def publish_many(layer, items) -> None:
    """group_send every (group, event) of `items`, in order, one command per shard."""
    global _publish_script
    if not isinstance(layer, RedisPubSubChannelLayer):
        for group, event in items:
            await layer.group_send(group, event)
        return
    loop_layer = layer._get_layer()
    by_shard: dict = {}
    for group, event in items:
        channel = loop_layer._get_group_channel_name(group)
        by_shard.setdefault(loop_layer._get_shard(channel), []).extend((channel, layer.serialize(event)))
    for shard, args in by_shard.items():
        async with shard._lock:
            shard._ensure_redis()
            if not _scripts_refused:
                if _publish_script is None:
                    _publish_script = shard._redis.register_script(PUBLISH_SCRIPT)
                try:
                    await _publish_script(args=args, client=shard._redis)
                    continue
                except ResponseError as exc:
                    if not _script_refused(exc):
                        raise
                    _refused(exc)
            await _publish_pipelined(shard._redis, args)


def _script_refused(exc: ResponseError) -> bool:
    """Redis would not run the script: an ACL without +@scripting (NOPERM), or EVALSHA /
    SCRIPT renamed away in its config (unknown command). Both are answered before the
    script runs, so nothing of the batch went out. (A NOPERM from inside the script, a
    channel the ACL forbids, may come after some PUBLISHes: those messages then arrive
    twice, and every Room drops an id it already has.)"""
    return isinstance(exc, NoPermissionError) or str(exc).lower().startswith("unknown command")


def _refused(exc) -> None:
    """Publish this batch and every later one as a pipeline; say so once."""
    global _scripts_refused
    _scripts_refused = True
    logger.warning(
        "publish: Redis will not run the publish script (%s); publishing with pipelines of PUBLISH "
        "from now on, at more CPU per message. Allow scripting for the channel layer's Redis user "
        "(+@scripting, EVALSHA and SCRIPT not renamed; docs/reliability.md) and restart the workers "
        "to use the script again.", exc)


async def _publish_pipelined(client, args) -> None:
    """The same PUBLISHes, in order, in one round trip, each packed by redis-py."""
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(args), 2):
        pipe.publish(args[i], args[i + 1])
    await pipe.execute()


class _Sink:
    """What channels_redis's reader finds instead of a channel's asyncio.Queue."""

    __slots__ = ("group", "deserialize", "on_event")

    def __init__(self, group, deserialize, on_event):
        self.group, self.deserialize, self.on_event = group, deserialize, on_event

    def put_nowait(self, data) -> None:
        # Runs inside channels_redis's reader task, which logs anything raised and
        # then sleeps a second: one bad message must cost neither.
        try:
            self.on_event(self.deserialize(data))
        except Exception:
            logger.exception("group %s: handling a message failed; it is skipped", self.group)


class Listener:
    """One group subscription made by listen(); stop() gives it back."""

    def __init__(self, layer, group, channel, task=None):
        self.layer, self.group, self.channel, self.task = layer, group, channel, task

    async def stop(self) -> None:
        """No more callbacks from now on; UNSUBSCRIBE when this was the group's last member."""
        if self.task is not None:
            self.task.cancel()  # channels_redis's receive() then drops its channel itself
        elif isinstance(self.layer, RedisPubSubChannelLayer):
            self.layer._get_layer().channels.pop(self.channel, None)
        await self.layer.group_discard(self.group, self.channel)


# How long the reader waits for a message before it reads again. channels_redis
# waits 0.1 s: ten wake-ups a second per shard on a quiet worker, each a timeout
# context and a cancelled read, a fifth of an idle worker's CPU (measured,
# docs/benchmarks.md). Nothing needs them: a message ends the wait, cancellation
# reaches the await, and redis-py's health check (health_check_interval, 30 s)
# goes out with the next read, now at most this late.
READ_WAIT_SECONDS = 1.0


async def receive_loop(shard) -> None:
    """channels_redis's RedisSingleShardConnection._do_receiving, plus _drain(), waiting
    READ_WAIT_SECONDS instead of 0.1 s per read on a quiet connection."""
    while True:
        try:
            pubsub = shard._pubsub
            if pubsub and pubsub.subscribed:
                # A quiet wait ends on the worker's tick (wsworker.ticks), not on a phase of its own.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=ticks.delay(READ_WAIT_SECONDS))
                shard._receive_message(message)
                if message is not None:
                    await _drain(shard, pubsub)
            else:
                await asyncio.sleep(0.1)
        except (asyncio.CancelledError, asyncio.TimeoutError, GeneratorExit):
            raise
        except BaseException:
            logger.exception("Unexpected exception in receive task")
            await asyncio.sleep(1)


async def _drain(shard, pubsub) -> None:
    """Hand over the replies hiredis already holds complete, without another read.

    What redis-py's get_message() does with a reply, minus the read: push
    notifications through the parser's handler (RESP3), health-check answers
    dropped, the next health check pushed back, every other reply through
    PubSub.handle_message(), so subscription state is kept by redis-py itself.
    An error reply disconnects and raises, as a read of it would. Without
    hiredis nothing is drained: get_message() reads every reply.
    """
    conn = pubsub.connection
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None:
        return
    push_type = parser._hiredis_PushNotificationType
    health = pubsub.health_check_response if conn.health_check_interval else ()
    read_any = False
    for _ in range(DRAIN_MAX):
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            break
        read_any = True
        failed = reply if isinstance(reply, Exception) else (
            reply[0] if isinstance(reply, list) and reply and isinstance(reply[0], Exception) else None)
        if failed is not None:
            await conn.disconnect(nowait=True)
            raise failed
        if push_type is not None and isinstance(reply, push_type):
            reply = await parser.handle_push_response(reply)
        if health and reply in health:
            continue
        shard._receive_message(await pubsub.handle_message(reply, ignore_subscribe_messages=True))
    if read_any and conn.health_check_interval:
        conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval


def _install_receive_loop(loop_layer) -> None:
    """Every shard of this loop's layer reads with receive_loop() from its next start."""
    for shard in loop_layer._shards:
        if not isinstance(shard.__dict__.get("_do_receiving"), functools.partial):
            shard._do_receiving = functools.partial(receive_loop, shard)


async def listen(layer, group: str, on_event) -> Listener:
    """Call on_event(event) for every event sent to `group`, in Redis's order.

    on_event runs synchronously in the layer's reader and must not block. Any
    other layer gets a task that awaits layer.receive(), as Channels does.
    """
    if not isinstance(layer, RedisPubSubChannelLayer):
        channel = await layer.new_channel(prefix="listen.")
        await layer.group_add(group, channel)

        async def receive_loop():
            while True:
                on_event(await layer.receive(channel))

        return Listener(layer, group, channel, asyncio.ensure_future(receive_loop()))
    # A name only this process knows: nothing is published to it, so unlike
    # new_channel() it needs no SUBSCRIBE of its own; group_add() needs it listed.
    channel = f"listen.{group}!{uuid.uuid4().hex}"
    _install_receive_loop(layer._get_layer())
    layer._get_layer().channels[channel] = _Sink(group, layer.deserialize, on_event)
    listener = Listener(layer, group, channel)
    try:
        await layer.group_add(group, channel)
    except BaseException:
        # Failed or cancelled (a frozen Redis): no callbacks from now on, and the
        # membership is given back whenever Redis answers, without holding the caller.
        layer._get_layer().channels.pop(channel, None)
        asyncio.ensure_future(listener.stop())
        raise
    return listener
