"""REDIS_MODE: the channel layer's host entries per topology, built in fresh processes.

What an operator sets in .env must become channels_redis's own configuration
(a Sentinel entry, or one entry per shard), with `socket_timeout: None` kept on
every layer connection, and a wrong setting must stop the process with its name.
"""
import json

import pytest

from .test_settings import _manage

SHOW = ("import json; from django.conf import settings; "
        "print(json.dumps(settings.CHANNEL_LAYERS['default']['CONFIG']['hosts']))")


def _hosts(**env):
    result = _manage("shell", "-c", SHOW, REDIS_URL=None, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_single_is_one_address_without_socket_timeout():
    (host,) = _hosts(REDIS_MODE="single", REDIS_PASSWORD="pw", REDIS_HOST="r1", REDIS_PORT="6390")
    assert host["address"] == "redis://:pw@r1:6390/0"
    assert host["socket_timeout"] is None


def test_sentinel_is_one_channels_redis_sentinel_entry():
    (host,) = _hosts(REDIS_MODE="sentinel", REDIS_SENTINELS="10.0.0.1:26379, s2:26380",
                     REDIS_SENTINEL_MASTER="chatmaster", REDIS_SENTINEL_PASSWORD="spw", REDIS_PASSWORD="pw")
    assert host["sentinels"] == [["10.0.0.1", 26379], ["s2", 26380]]
    assert host["master_name"] == "chatmaster"
    assert host["sentinel_kwargs"]["password"] == "spw"
    assert host["password"] == "pw" and host["socket_timeout"] is None and "address" not in host


def test_sharded_is_one_entry_per_url_with_the_redis_password_filled_in():
    hosts = _hosts(REDIS_MODE="sharded", REDIS_PASSWORD="p@ss",
                   REDIS_SHARD_URLS="redis://s1:6379/0,redis://:own@s2:6379/0")
    assert [h["address"] for h in hosts] == ["redis://:p%40ss@s1:6379/0", "redis://:own@s2:6379/0"]
    assert all(h["socket_timeout"] is None for h in hosts)


@pytest.mark.parametrize("env, named", [
    ({"REDIS_MODE": "cluster"}, "REDIS_MODE must be single, sentinel or sharded"),
    ({"REDIS_MODE": "sentinel", "REDIS_SENTINELS": ""}, "REDIS_MODE=sentinel needs REDIS_SENTINELS"),
    ({"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "s1"}, "REDIS_SENTINELS: 's1' is not host:port"),
    ({"REDIS_MODE": "sharded", "REDIS_SHARD_URLS": "redis://s1:6379/0"}, "needs at least two URLs in REDIS_SHARD_URLS"),
    ({"REDIS_MODE": "sharded", "REDIS_SHARD_URLS": "s1:6379,s2:6379"}, "REDIS_SHARD_URLS: 's1:6379' is not a redis://"),
])
def test_a_wrong_topology_refuses_to_start_and_names_the_setting(env, named):
    result = _manage("check", **env)
    assert result.returncode != 0 and named in result.stderr
