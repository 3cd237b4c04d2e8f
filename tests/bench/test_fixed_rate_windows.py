"""A fixed-rate scenario (sparse rooms) pools its windows, and splits its CPU into idle and per message.

One 24-second sparse window moved 18-42 % between runs (session 18): the report
pools several, shows their spread, and what the stack spends before any message.
"""
import pytest

from bench.fanout import Scenario, above_idle, pooled
from bench.report_rooms import idle_markdown, markdown, same_load


def _window(received, ws_cpu_s, p99, ok=True, sent=100, window_s=25.0):
    return {"target_per_s": 100, "delivered_per_s": 100, "received": received, "expected": sent * 4, "sent": sent,
            "lost": max(0, sent * 4 - received), "ws_cpu_s": ws_cpu_s, "cpu_window_s": window_s, "p99_ms": p99,
            "ok": ok, "deliveries_per_ws_cpu_s": round(min(received, sent * 4) / ws_cpu_s)}


def test_windows_are_summed_not_averaged_and_the_worst_latency_is_kept():
    rows = [_window(400, 0.1, 3.0), _window(400, 0.3, 9.0), _window(400, 0.2, 4.0)]
    found = pooled(rows)
    assert found["deliveries_per_ws_cpu_s"] == 2000  # 1,200 deliveries / 0.6 CPU-s, not mean(4000, 1333, 2000)
    assert found["windows"] == [4000, 1333, 2000]
    assert found["p99_ms"] == 9.0 and found["ok"] and found["sent"] == 300


def test_one_failed_window_fails_the_scenario():
    found = pooled([_window(400, 0.1, 3.0), _window(390, 0.1, 3.0, ok=False)])
    assert not found["ok"] and found["lost"] == 10


def test_cpu_above_idle_per_message():
    rows = [_window(400, 0.1, 3.0, window_s=20.0), _window(400, 0.14, 3.0, window_s=20.0)]
    # 0.24 CPU-s in 40 s, of which an idle stack spends 2 ms/s = 0.08: 0.16 s for 200 messages
    assert above_idle(rows, {"ws_cpu_ms_per_s": 2.0}) == pytest.approx(0.8)
    assert above_idle(rows, None) is None


def test_windows_need_a_fixed_rate():
    Scenario(name="S", steps=[100], windows=3)
    with pytest.raises(ValueError, match="windows=3 needs a fixed-rate scenario"):
        Scenario(name="S", steps=[100, 200], windows=3)


def _sparse(rows, idle_ms):
    found = pooled(rows)
    return {"scenario": {"steps": [100], "rooms": 100, "windows": len(rows)}, "workers": 2, "steps": rows,
            "pooled": found, "knee": found if found["ok"] else None, "idle": {"ws_cpu_ms_per_s": idle_ms},
            "per_message_above_idle": above_idle(rows, {"ws_cpu_ms_per_s": idle_ms}), "postgres": None}


def test_the_report_shows_the_pooled_figure_its_spread_and_the_idle_split():
    ours = _sparse([_window(400, 0.1, 3.0), _window(400, 0.3, 9.0)], 6.0)
    peer = _sparse([_window(400, 0.2, 3.0), _window(400, 0.2, 3.0)], 2.0)
    results = {"scenarios": ["SPARSE"], "stacks": {"ours": {"label": "ours", "stores": True,
                                                            "fanout": {"SPARSE": ours}},
                                                   "socketio": {"label": "peer", "stores": False,
                                                                "fanout": {"SPARSE": peer}}}}
    assert "| SPARSE | ours | 2 | 100 | — | 2,000 (1,333–4,000 in 2 windows) | 9.00 |" in markdown(results)
    assert same_load(results, "SPARSE") == [(100, 2000, 2000)]
    idle = idle_markdown(results)
    assert "| SPARSE | ours | 2 | 6.00 | 3.00 | 0.50 |" in idle  # (0.4 - 0.006 * 50) / 200 messages
    assert "| SPARSE | socketio | 2 | 2.00 | 1.00 | 1.50 |" in idle


def test_a_ws_servers_cpu_is_read_below_psutils_10_ms_tick():
    """A sparse window's ws workers use a few ms of CPU: CpuWindow reads ws servers
    from the scheduler, so 3 ms of work reads as about 3 ms, not 0 or 10."""
    import subprocess
    import sys

    from bench.cpu import CpuWindow

    spin = ("import sys, time\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "t = time.thread_time()\n"
            "while time.thread_time() - t < 0.003: pass\n"
            "print('done', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"  # started: its startup is not in the window
        window = CpuWindow({"ws1": proc.pid, "other": proc.pid}).start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        used = window.seconds()
        assert 0.003 <= used["ws1"] < 0.009, used
        assert round(used["other"], 2) == used["other"], "the rest still read psutil's ticks"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
