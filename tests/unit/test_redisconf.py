"""wsworker.redisconf: the layer's Redis servers as every direct Redis user sees them."""
import copy

import pytest

from wsworker import redisconf


def _layer(settings, hosts, backend="channels_redis.pubsub.RedisPubSubChannelLayer"):
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["BACKEND"] = backend
    layers["default"]["CONFIG"]["hosts"] = hosts
    settings.CHANNEL_LAYERS = layers


def test_labels_never_show_a_password(settings):
    _layer(settings, [
        {"address": "redis://:s3cret@r1:6390/2"},
        {"sentinels": [("s1", 26379), ("s2", 26380)], "master_name": "chat", "password": "s3cret",
         "sentinel_kwargs": {"password": "s3cret"}},
        ("r3", 6379),
    ])
    labels = [redisconf.label(h) for h in redisconf.hosts()]
    assert labels == ["redis://r1:6390/2", "sentinel:chat@s1:26379,s2:26380", "redis://r3:6379"]


def test_a_layer_that_is_not_redis_has_no_servers(settings):
    _layer(settings, [{"address": "redis://r1:6379/0"}], backend="channels.layers.InMemoryChannelLayer")
    assert redisconf.hosts() == []


async def test_connect_reaches_the_layers_redis(settings):
    (host,) = redisconf.hosts()
    async with redisconf.connect(host, timeout=2) as client:
        assert await client.ping()
    with redisconf.connect_sync(host, timeout=2) as client:
        assert client.ping()


async def test_a_sentinel_entry_with_no_sentinel_fails_fast():
    host = {"sentinels": [("127.0.0.1", 1)], "master_name": "chat", "sentinel_kwargs": {}}
    with pytest.raises(Exception, match="No master found"):
        async with redisconf.connect(host, timeout=1) as client:
            await client.ping()
