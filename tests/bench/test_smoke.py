"""CI smoke of `make bench`: the benchmark runs end to end and writes a complete report.

Nothing here asserts speed (CI machines vary); it asserts that each stack (the
baseline, ours and the Socket.IO peer) came up, every scenario (one room, many
small rooms, sparse rooms with 2 and 4 workers) delivered and was measured, and
the three outputs exist, so a broken load generator or stack cannot hide behind
a green bench.
"""
import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACKS = ["baseline", "ours", "socketio"]
SCENARIOS = {"N10": (1, 10, 2), "DM20": (20, 2, 2), "G4x5": (4, 5, 2), "SPARSE10x4": (10, 4, 2),
             "SPARSE10x4w4": (10, 4, 4)}  # rooms, subscribers per room, ws workers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([str(REPO / "scripts" / "bench"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


def test_writes_the_three_outputs(smoke):
    out, _results, _stdout = smoke
    png = (out / "fanout.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = (out / "results.md").read_text()
    assert "| metric | baseline | ours | ours ÷ baseline |" in md
    assert "loss-free delivered/s" in md


def test_reports_what_a_send_costs_on_this_machine(smoke):
    out, results, _stdout = smoke
    cost = results["meta"]["send_cost"]
    assert 0 < cost["busy_us"] and 0 < cost["sleeping_us"]
    assert f"costs its sender {cost['busy_us']} µs of CPU to a busy peer" in (out / "results.md").read_text()


@pytest.mark.parametrize("label", STACKS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_every_step_is_measured(smoke, label, name):
    _out, results, _stdout = smoke
    rooms, subs, workers = SCENARIOS[name]
    res = results["stacks"][label]["fanout"][name]
    assert res["workers"] == workers
    assert sum(res["distribution"].values()) == rooms * subs
    assert len(res["distribution"]) == workers, f"subscribers not spread over the {workers} workers"
    if name == "N10":
        assert sorted(res["distribution"].values()) == [5, 5]
    else:  # placed by nginx: every room is on at least one worker
        assert sum(res["rooms_spanning_workers"].values()) == rooms
    assert res["steps"], "no load step ran"
    for row in res["steps"]:
        assert row["sent"] > 0 and row["received"] > 0
        assert row["expected"] == row["sent"] * subs
        for key in ("offered_per_s", "delivered_per_s", "lost", "p50_ms", "p95_ms", "p99_ms"):
            assert isinstance(row[key], (int, float)), (key, row)
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert any(k.startswith("ws") for k in row["cpu_pct"]) and any(k.startswith("client") for k in row["cpu_pct"])
        assert row["ws_cpu_s"] > 0 and row["deliveries_per_ws_cpu_s"] > 0
    assert res["knee"] is not None, "not even the smallest step delivered everything"


@pytest.mark.parametrize("name", SCENARIOS)
def test_postgres_transactions_per_stored_message(smoke, name):
    _out, results, _stdout = smoke
    pg = results["stacks"]["ours"]["fanout"][name]["postgres"]
    sent = sum(r["sent"] for r in results["stacks"]["ours"]["fanout"][name]["steps"])
    assert pg["stored"] == sent, "every message sent in the steps is stored, and only those"
    assert pg["transactions"] >= 1 and pg["per_stored_message"] == round(pg["transactions"] / sent, 3)
    for label in ("baseline", "socketio"):
        assert results["stacks"][label]["fanout"][name]["postgres"] is None


def test_comparison_table(smoke):
    out, results, _stdout = smoke
    md = (out / "results.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and " | " in line]
    for name in SCENARIOS:
        ours = next(line for line in table if line.startswith(f"| {name} | ours | "))
        assert ours.count("|") == 10 and "n/a" not in ours
        peer = next(line for line in table if line.startswith(f"| {name} | socketio | "))
        assert "n/a (stores nothing)" in peer
    assert "Socket.IO 4 + redis-adapter (peer, no persistence)" in md


def test_same_load_comparison(smoke):
    """Ours and the peer at the same offered rate: the highest step both passed, per scenario."""
    out, results, _stdout = smoke
    md = (out / "results.md").read_text()
    table = md.split("Same offered load", 1)[1].split("\n\n")[1].splitlines()
    for name in SCENARIOS:
        passed = [{s["target_per_s"] for s in results["stacks"][label]["fanout"][name]["steps"] if s["ok"]}
                  for label in ("ours", "socketio")]
        common = passed[0] & passed[1]
        row = next(line for line in table if line.startswith(f"| {name} | "))
        assert row.split(" | ")[1] == f"{max(common):,}", row
        every = re.search(r"\| (\d+\.\d\d)× \((\d+\.\d\d)–(\d+\.\d\d)×, (\d+) steps?\) \|$", row.rstrip())
        assert every and int(every[4]) == len(common), row
        assert float(every[2]) <= float(every[1]) <= float(every[3]), row


@pytest.mark.parametrize("label", ["baseline", "ours"])
def test_idle_capacity_is_measured(smoke, label):
    _out, results, _stdout = smoke
    cap = results["stacks"][label]["capacity"]
    assert cap["connects"]["opened"] == cap["connects"]["attempted"] > 0
    assert cap["connects"]["per_s"] > 0
    assert len(cap["idle"]) == 2 and all(w["alive"] == w["target"] for w in cap["idle"])
    assert cap["rss_per_socket_kib"] is not None


@pytest.mark.parametrize("label", ["baseline", "ours"])
def test_idle_sockets_in_small_rooms_are_measured(smoke, label):
    """Every socket in a room of its own per worker: each held, priced in RSS and CPU, reported."""
    out, results, _stdout = smoke
    rooms = results["stacks"][label]["capacity_rooms"]
    assert rooms["opened"] == rooms["attempted"] == sum(w["target"] for w in rooms["idle"]) > 0, rooms
    assert len(rooms["idle"]) == 2 and all(w["alive"] == w["target"] == w["rooms"] for w in rooms["idle"]), rooms
    assert rooms["rss_per_socket_kib"] is not None and rooms["cpu_ms_per_connect"] > 0
    md = (out / "results.md").read_text()
    assert f"**idle sockets in small rooms, {label}**: every socket in a room of its own" in md
    assert "| connects/s into rooms new to the worker (direct) |" in md


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


@pytest.mark.parametrize("label", STACKS)
@pytest.mark.parametrize("name", ["SPARSE10x4", "SPARSE10x4w4"])
def test_fixed_rate_scenarios_pool_their_windows_after_an_idle_one(smoke, label, name):
    """A sparse scenario's figure is its windows pooled, and its idle cost is read first."""
    out, results, _stdout = smoke
    res = results["stacks"][label]["fanout"][name]
    assert len(res["steps"]) == res["scenario"]["windows"] == 2
    pooled = res["pooled"]
    assert pooled["windows"] == [r["deliveries_per_ws_cpu_s"] for r in res["steps"]]
    assert min(pooled["windows"]) <= pooled["deliveries_per_ws_cpu_s"] <= max(pooled["windows"])
    idle = res["idle"]
    assert idle["seconds"] >= res["scenario"]["idle_s"] and len(idle["per_worker"]) == res["workers"]
    assert all(ms >= 0 for ms in idle["per_worker"].values()), idle
    if label == "ours":
        # Ours ticks once a second (wsworker.ticks); Node's loop sleeps until its next
        # timer (Socket.IO pings every 25 s), so the peer may read 0.0 over 2 s.
        assert idle["ws_cpu_ms_per_s"] > 0, "a ws worker that ticks each second spends something on it"
    assert res["per_message_above_idle"] is not None
    md = (out / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {name} | {label} | {res['workers']} | "))
    assert "in 2 windows)" in row, row
    table = md.split("Where the ws CPU of a fixed-rate scenario goes", 1)[1]
    assert f"| {name} | {label} | {res['workers']} | {idle['ws_cpu_ms_per_s']:,.2f} |" in table
