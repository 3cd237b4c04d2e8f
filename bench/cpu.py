"""CPU accounting per process over a measurement window (psutil).

Reported in percent of ONE core so a saturated single-threaded worker reads
~100 and the client processes can be compared to it directly.
"""
import time

import psutil


class CpuWindow:
    """Snapshot cpu_times of named PIDs (and their children) at start, diff at stop."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self._t0 = None
        self._start = {}

    def _times(self):
        out = {}
        for name, pid in self.pids.items():
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
