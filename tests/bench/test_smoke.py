"""CI smoke of `make bench`: the benchmark runs end to end and writes a complete report.

Nothing here asserts speed (CI machines vary); it asserts that each stack came
up, every step delivered and was measured, and the three outputs exist, so a
broken load generator or stack cannot hide behind a green bench.
"""
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([str(REPO / "scripts" / "bench"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def test_writes_the_three_outputs(smoke):
    out, _results, _stdout = smoke
    png = (out / "fanout.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (out / "results.md").read_text()
    assert "| metric | baseline | ours | ours ÷ baseline |" in md
    assert "loss-free delivered/s" in md


@pytest.mark.parametrize("label", ["baseline", "ours"])
def test_every_step_is_measured(smoke, label):
    _out, results, _stdout = smoke
    res = results["stacks"][label]["fanout"]["N10"]
    assert sorted(res["distribution"].values()) == [5, 5], "subscribers not spread over the 2 workers"
    assert res["steps"], "no load step ran"
    for row in res["steps"]:
        assert row["sent"] > 0 and row["received"] > 0
        assert row["expected"] == row["sent"] * 10
        for key in ("offered_per_s", "delivered_per_s", "lost", "p50_ms", "p95_ms", "p99_ms"):
            assert isinstance(row[key], (int, float)), (key, row)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert any(k.startswith("ws") for k in row["cpu_pct"]) and any(k.startswith("client") for k in row["cpu_pct"])
    assert res["knee"] is not None, "not even the smallest step delivered everything"


@pytest.mark.parametrize("label", ["baseline", "ours"])
def test_idle_capacity_is_measured(smoke, label):
    _out, results, _stdout = smoke
    cap = results["stacks"][label]["capacity"]
    assert cap["connects"]["opened"] == cap["connects"]["attempted"] > 0
    assert cap["connects"]["per_s"] > 0
    assert len(cap["idle"]) == 2 and all(w["alive"] == w["target"] for w in cap["idle"])
    assert cap["rss_per_socket_kib"] is not None


def test_ratios_reported(smoke):
    _out, results, stdout = smoke
    md = (_out / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| N10: loss-free delivered/s"))
    assert row.rstrip().endswith("× |"), row
    assert results["meta"]["product_env_overrides"]["CHAT_RATE_PER_SEC"]
    assert "wrote" in stdout


@pytest.mark.parametrize("scenario", ["storm", "rebalance"])
def test_scaling_scenarios_run_and_lose_nothing(smoke, scenario):
    """bench/scaling.py: figures present, and the invariants that hold at any size."""
    out, results, _stdout = smoke
    res = results["scaling"][scenario]
    assert res["lost"] == 0 and res["duplicated"] == 0 and res["reordered"] == 0, res
    assert res["clients_stopped"] == 0 and not res["problems"], res
    assert res["chat_messages_acked"] > 0
    if scenario == "storm":
        assert res["resumed"] == res["back"] == res["drained"] > 0
        assert res["all_resumed_s"] >= res["all_back_s"] > 0
        assert res["clients_gave_up"] == 0
    else:
        assert res["closes_1012"] >= res["minimum_moves"] > 0 and res["within_20pct_s"] >= 0
    assert "## Scaling (issue 16)" in (out / "scaling.md").read_text()
