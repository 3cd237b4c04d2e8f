"""What an operator would look at during a fault: HTTP status of health endpoints,
process RSS, log lines, Redis pub/sub membership, and deadline-bounded polling.

Kept apart from the load generator so each fault test reads as
"inject, then check what an operator sees".
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import psutil

T = TypeVar("T")

# Loopback only: never let an environment proxy intercept the probes.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET url; None when nothing answers (refused, reset, timeout)."""
    try:
        with _opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def http_json(url: str, timeout: float = 5.0) -> dict:
    """GET url and decode its JSON body (raises when it does not answer 2xx)."""
    with _opener.open(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll check() until it returns a truthy value; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_until(check: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Async twin of wait_until: keeps the event loop (and the clients) running."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def tree_rss(pid: int) -> int:
    """RSS in bytes of a process and all its descendants (nginx, gunicorn and
    Postgres are process trees; the tier's cost is the sum)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pid_reaped(pid: int) -> bool:
    """Gone from /proc, zombie included: only then will the runner start a new one
    (it treats a recorded PID that still exists as running)."""
    return not os.path.exists(f"/proc/{pid}")


class LogMark:
    """Remembers where log files end now, to read only what a fault produced."""

    def __init__(self, paths: Iterable[Path]):
        self.offsets = {Path(p): (Path(p).stat().st_size if Path(p).exists() else 0) for p in paths}

    def new_text(self) -> dict[Path, str]:
        out = {}
        for path, offset in self.offsets.items():
            if path.exists():
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    out[path] = fh.read().decode("utf-8", "replace")
        return out

    def matching(self, needles: Iterable[str]) -> list[str]:
        """Lines added since the mark that contain any needle (case-insensitive)."""
        lowered = [n.lower() for n in needles]
        hits = []
        for path, text in self.new_text().items():
            for line in text.splitlines():
                if any(n in line.lower() for n in lowered):
                    hits.append(f"{path.name}: {line}")
        return hits


def rebalance_closes_logged(texts: Iterable[str]) -> int:
    """1012 closes these ws worker log texts report as the census's (wsworker.rebalance's
    "rebalance: done, closed N socket(s)" lines): the balancer's, not a fault's."""
    return sum(int(m.group(1)) for text in texts for m in re.finditer(r"rebalance: done, closed (\d+) socket", text))


def redis_layer_footprint(redis_client, prefix: str) -> tuple[int, int]:
    """(pub/sub channels under the layer prefix, their total subscribers).

    With the pub/sub channel layer a group member is a SUBSCRIBE on the group's
    channel; a stale member would keep these numbers above their baseline."""
    channels = [c.decode() if isinstance(c, bytes) else c for c in redis_client.pubsub_channels(f"{prefix}*")]
    if not channels:
        return 0, 0
    counts = redis_client.pubsub_numsub(*channels)
    return len(channels), sum(n for _, n in counts)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
