"""Prometheus of the compose `monitoring` profile, as the compose tests read it.

The session runs with COMPOSE_PROFILES=monitoring (what `make up-monitoring` does),
so Prometheus watches the scaling tests: it must find every ws replica through
Docker's DNS and drop removed ones, without a restart.
"""
from __future__ import annotations

import json
import time
import urllib.request

PROFILE_SERVICES = {"prometheus", "redis-exporter", "postgres-exporter", "nginx-exporter"}


def targets(project) -> list[tuple[str, str]]:
    """(job, health) of every active target, sorted."""
    url = f"http://127.0.0.1:{project.prometheus_port}/api/v1/targets"
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.loads(resp.read())["data"]["activeTargets"]
    return sorted((t["labels"]["job"], t["health"]) for t in data)


def wait_for_ws_targets(project, count: int, deadline: float = 60.0) -> float:
    """Seconds until Prometheus has exactly `count` ws targets, all up, and every other job up."""
    want = sorted([("ws", "up")] * count + [(job, "up") for job in
                                            ("web", "nginx", "redis", "postgres", "prometheus")])
    start, got = time.monotonic(), None
    while time.monotonic() - start < deadline:
        try:
            got = targets(project)
        except OSError:
            got = None
        if got == want:
            return time.monotonic() - start
        time.sleep(1)
    raise AssertionError(f"Prometheus targets after {deadline}s: {got}, want {want}")


def started_at(project) -> str:
    (cid,) = project.container_ids("prometheus")
    return project.inspect(cid)["State"]["StartedAt"]
