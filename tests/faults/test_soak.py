"""CI variant of `make soak`: 300 sockets through nginx for 1 minute with heartbeats.

The full soak (2000 sockets, 10 minutes) is too long for CI; this one keeps the
same code path and still fails on a dropped socket or a missed heartbeat.
"""

from __future__ import annotations

import pytest

from tests.faults.probes import env_int
from tests.faults.soak import soak

pytestmark = pytest.mark.slow


async def test_soak_short(stack, soak_reports):
    sockets = env_int("FAULTS_SOAK_SOCKETS", 300)
    report = await soak(stack, sockets=sockets, minutes=env_int("FAULTS_SOAK_SECONDS", 60) / 60, heartbeat=10)
    soak_reports.append(report)
    assert report.heartbeats >= 3, "the soak did not run long enough to prove anything"
    assert report.dropped == 0, f"{report.dropped} of {sockets} sockets dropped"
    assert report.missed == 0, f"{report.missed} heartbeat deliveries missed"
    assert all("after" in v for v in report.rss.values()), report.rss
