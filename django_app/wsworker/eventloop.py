"""The event loop under Twisted's reactor: uvloop unless WS_EVENT_LOOP=asyncio.

Must run before daphne.server is imported, because that import installs the
asyncio reactor on the loop the policy creates (wsworker.__main__ calls it first).
"""
import asyncio
import os


def choose() -> str:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from . import conf

    name = conf.get("WS_EVENT_LOOP")
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name
