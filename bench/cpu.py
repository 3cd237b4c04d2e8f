"""CPU accounting per process over a measurement window (psutil; the scheduler for ws servers).

Reported in percent of ONE core so a saturated single-threaded worker reads
~100 and the client processes can be compared to it directly.
"""
import os
import time

import psutil


class CpuWindow:
    """Snapshot cpu_times of named PIDs (and their children) at start, diff at stop.

    The ws servers (names starting with "ws") are read from the scheduler
    (thread_cpu_s), the rest from psutil. A sparse step's ws workers use a few ms
    of CPU each, and psutil counts 10 ms ticks: the peer's two workers read 0.01
    CPU-s for a smoke window one day, so a window could read 0 and have no figure.
    The servers start no thread per message (their thread pools persist), so the
    live threads' sum holds all their time."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self._t0 = None
        self._start = {}

    def _times(self):
        out = {}
        for name, pid in self.pids.items():
            if name.startswith("ws"):
                precise = thread_cpu_s(pid)
                if precise is not None:
                    out[name] = precise
                    continue
            total = 0.0
            try:
                proc = psutil.Process(pid)
                family = [proc] + proc.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for p in family:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        return out

    def start(self):
        self._start = self._times()
        self._t0 = time.monotonic()
        return self

    def stop(self):
        wall = max(1e-6, time.monotonic() - self._t0)
        end = self._times()
        return {name: round(100.0 * (end[name] - self._start.get(name, 0.0)) / wall, 1)
                for name in end}

    def elapsed(self):
        """Wall seconds since start()."""
        return time.monotonic() - self._t0

    def seconds(self):
        """CPU-seconds each process (with children) used since start(), without stopping."""
        end = self._times()
        return {name: round(end[name] - self._start.get(name, 0.0), 4) for name in end}


def rss(pid, children=False):
    """Resident set size in bytes (optionally with children, e.g. nginx workers)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc] + (proc.children(recursive=True) if children else [])
        return sum(p.memory_info().rss for p in procs)
    except psutil.NoSuchProcess:
        return 0


def thread_cpu_s(pid):
    """CPU-seconds of every live thread of `pid`, in nanoseconds from the scheduler
    (/proc/PID/task/*/schedstat), or None where that is not readable.

    psutil's cpu_times count 10 ms ticks: an idle worker uses a few ms per second,
    so a 24-second idle window would read it to ±15 %. The scheduler's clock does
    not round. A thread that exits inside a window takes its time with it, so this
    is for windows where the servers start no work (idle sockets)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, read = 0, False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
            read = True
        except (OSError, ValueError, IndexError):
            pass  # gone between the listing and the read (or no schedstat in this kernel)
    return total / 1e9 if read else None


def idle_cpu_ms_per_s(pids, seconds):
    """(ms of CPU per second of each pid over `seconds` of doing nothing asked of them, wall s)."""
    before = {name: thread_cpu_s(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    after = {name: thread_cpu_s(pid) for name, pid in pids.items()}
    wall = time.monotonic() - t0
    return {name: round(1000 * (after[name] - before[name]) / wall, 3) for name in pids
            if before[name] is not None and after[name] is not None}, wall
