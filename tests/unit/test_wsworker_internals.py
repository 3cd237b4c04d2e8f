"""The library internals wsworker touches still exist (wsworker.protocol.PRIVATE_INTERNALS).

daphne, autobahn and Twisted do not promise these names; when an upgrade
renames one, this fails and names it, instead of the worker failing at runtime.
"""
import importlib
import inspect
import re

import pytest

from wsworker.protocol import PRIVATE_INTERNALS


def has_attribute(cls, attr: str) -> bool:
    if hasattr(cls, attr):
        return True
    # Instance attributes: set as `self.<attr> =` in one of the class's methods.
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\s*[:=]")
    return any(pattern.search(inspect.getsource(klass)) for klass in cls.__mro__ if klass is not object
               and klass.__module__.split(".")[0] in ("autobahn", "twisted", "daphne"))


@pytest.mark.parametrize("where,attr", PRIVATE_INTERNALS)
def test_library_internal_still_exists(where, attr):
    module, _, name = where.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert has_attribute(cls, attr), f"{where}.{attr} is gone: wsworker.protocol needs it (see PRIVATE_INTERNALS)"


def test_the_check_fails_for_a_missing_name():
    from autobahn.websocket.protocol import WebSocketServerProtocol

    assert not has_attribute(WebSocketServerProtocol, "_no_such_internal")
