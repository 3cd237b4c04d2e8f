"""Pipelined publishes (chat.delivery.redislayer) reach the same subscribers as
group_send, and the channels_redis internals they use still exist."""
import importlib

import pytest
from channels.layers import get_channel_layer

from chat.delivery.redislayer import PRIVATE_INTERNALS, publish_many


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
