"""The settings the worker runtime reads, and their defaults.

They live in the project's Django settings (this project fills them from the
environment, .env.example documents each); a project that leaves one out gets
the default here, so any Channels settings module can run under wsworker.
"""
from django.conf import settings

DEFAULTS = {
    "WS_DRAIN_SECONDS": 10.0,  # SIGTERM: how long the drain waits for sockets to leave
    "WS_MAX_SEND_BUFFER_BYTES": 1048576,  # unsent bytes per socket before it is shed (1013)
    "WS_EVENT_LOOP": "uvloop",  # uvloop or asyncio
    "WS_GC_THRESHOLD": 10000,  # allocations between young-generation collections
    "WS_METRICS_PORT": 0,  # Prometheus /metrics on this port (0: off); never the WebSocket port
    "BIND_HOST": "127.0.0.1",  # the interface the metrics port listens on
    "WS_LOOP_STALL_SECONDS": 10.0,  # event loop blocked this long: exit (watchdog); 0 = off
    "WS_MAX_SOCKETS": 10000,  # sockets per worker before handshakes get 503 (wsworker.admission)
    "WS_BALANCE_TOLERANCE": 0.1,  # fraction above the fleet mean before refusing / rebalancing
    "WS_REBALANCE_RATE": 50,  # sockets per second a worker above the mean may close with 1012
}


def get(name: str):
    return getattr(settings, name, DEFAULTS[name])
