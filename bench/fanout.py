"""Cross-worker fan-out: step the offered load up until the stack breaks.

A step passes when every message sent reached every subscriber of its room
(0 lost) with p99 <= the latency budget. The knee is the highest delivered/s of
a passing step. Steps stop after `max_failures` failing steps, so an overloaded
stack never turns the run into a long wait.
"""
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.client import Proc, pids_of
from bench.cpu import CpuWindow


@dataclass
class Scenario:
    name: str = "N100"
    rooms: int = 1
    subs_per_room: int = 100
    pubs_per_room: int = 2
    steps: list = field(default_factory=lambda: [1000, 2000, 4000])  # offered deliveries/s
    duration: float = 4.0  # seconds of sending per step
    drain_s: float = 3.0  # longest wait for stragglers after the last send
    sub_procs: int = 2
    p99_budget_ms: float = 250.0
    max_failures: int = 2


def _percentiles(lat_us):
    if lat_us.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(lat_us, [50, 95, 99]) / 1000.0
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(lat_us.max()) / 1000.0, 2)}


def _split(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class FanoutRun:
    """Owns the client processes for one scenario against one running stack."""

    def __init__(self, stack, sc, log=print):
        self.stack, self.sc, self.log = stack, sc, log
        self.rooms = [f"bench{i}" for i in range(sc.rooms)]
        self.subs = [Proc("sub") for _ in range(sc.sub_procs)]
        self.pub = Proc("pub")
        self.workers = len(stack.ws_worker_urls)
        self.distribution = {}
        self.pub_distribution = {}

    def close(self):
        for p in self.subs + [self.pub]:
            p.close()

    # ---------------------------------------------------------------- sockets
    def ensure_subscribers(self):
        """Connect (or top up after a shed) every subscriber, balanced over the workers."""
        shares = [dict() for _ in self.subs]
        for room in self.rooms:
            # Whole multiples of the worker count per process, so each process's
            # own per-worker quota adds up to an exact global balance.
            units, rest = divmod(self.sc.subs_per_room, self.workers)
            for i, u in enumerate(_split(units, len(self.subs))):
                shares[i][room] = u * self.workers + (rest if i == 0 else 0)
        for p, rooms in zip(self.subs, shares):
            p.send(op="ensure", urls=[self.stack.ws_base], rooms=rooms, workers=self.workers)
        dist, alive, failures = {}, 0, {}
        for p in self.subs:
            r = p.recv(timeout=180)
            alive += r["alive"]
            for w, n in r["workers"].items():
                dist[w] = dist.get(w, 0) + n
            for k, n in r["failures"].items():
                failures[k] = failures.get(k, 0) + n
        self.distribution = dist
        want = self.sc.rooms * self.sc.subs_per_room
        if alive < want:
            raise RuntimeError(f"only {alive}/{want} subscribers connected ({failures})")
        return dist

    def connect(self):
        dist = self.ensure_subscribers()
        self.pub_distribution = self.pub.call(op="connect", url=self.stack.ws_base, rooms=self.rooms,
                                              per_room=self.sc.pubs_per_room, n_workers=self.workers,
                                              timeout=60)
        self.log(f"  {self.sc.name}: {sum(dist.values())} subscribers over workers {sorted(dist.values())}, "
                 f"publishers {sorted(self.pub_distribution.values())}")
        return dist

    # ------------------------------------------------------------------ steps
    def _received(self, step):
        for p in self.subs:
            p.send(op="count", step=step)
        return sum(p.recv(timeout=30) for p in self.subs)

    def _drain(self, step, expected):
        """Wait for every delivery, or until arrivals stop / the drain deadline passes."""
        deadline = time.monotonic() + self.sc.drain_s
        got = self._received(step)
        while got < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            got = self._received(step)
        # A failing step may leave a backlog: let it settle (bounded) so it does
        # not bleed into the next step's latencies.
        quiet_deadline = time.monotonic() + 10.0
        last = -1
        while got != last and time.monotonic() < quiet_deadline:
            last = got
            time.sleep(0.3)
            got = self._received(step)
        return got

    def run_step(self, step, offered):
        sc = self.sc
        rate = offered / sc.subs_per_room  # publishes/s over all rooms
        server_pids = self.stack.server_pids()
        client_pids = pids_of(self.subs + [self.pub])
        errors_before = self.pub.call(op="errors", timeout=10)
        self.pub.send(op="run", step=step, rate=rate, duration=sc.duration)
        cpu = CpuWindow({**server_pids, **client_pids}).start()
        res = self.pub.recv(timeout=sc.duration * 3 + 30)
        cpu_pct = cpu.stop()
        sent = sum(res["sent"].values())
        expected = sent * sc.subs_per_room
        self._drain(step, expected)
        lat, received, closed, alive = [], 0, {}, 0
        for p in self.subs:
            r = p.call(op="collect", step=step, timeout=60)
            received += r["received"]
            alive += r["alive"]
            lat.append(np.frombuffer(r["lat_us"], dtype=np.int64))
            for code, n in r["closed"].items():
                closed[str(code)] = closed.get(str(code), 0) + n
        lat_us = np.concatenate(lat) if lat else np.array([], dtype=np.int64)
        errors = {k: v - errors_before.get(k, 0) for k, v in res["errors"].items()
                  if v - errors_before.get(k, 0)}
        send_s = max(res["elapsed"], 1e-6)
        row = {
            "step": step,
            "offered_per_s": round(sent * sc.subs_per_room / send_s),
            "target_per_s": offered,
            "publish_per_s": round(sent / send_s, 1),
            "sent": sent,
            "expected": expected,
            "received": received,
            "delivered_per_s": round(min(received, expected) / send_s),
            "lost": max(0, expected - received),
            "refused": errors,
            "shed_sockets": closed,
            "alive_after": alive,
            **_percentiles(lat_us),
            "cpu_pct": cpu_pct,
        }
        row["ok"] = bool(row["lost"] == 0 and row["p99_ms"] is not None and row["p99_ms"] <= sc.p99_budget_ms
                         and not closed)
        return row

    def run(self):
        """Warm up, then step the offered load; returns the scenario's result dict."""
        self.connect()
        warm = self.run_step(0, min(self.sc.steps[0], 200))
        self.log(f"  warm-up: received {warm['received']}/{warm['expected']}")
        rows, failures = [], 0
        for i, offered in enumerate(self.sc.steps, 1):
            if i > 1 and (rows[-1]["shed_sockets"] or rows[-1]["alive_after"] < self.sc.rooms * self.sc.subs_per_room):
                self.ensure_subscribers()
            row = self.run_step(i, offered)
            rows.append(row)
            self.log("  step {step}: offered {offered_per_s}/s delivered {delivered_per_s}/s lost {lost} "
                     "p50 {p50_ms} p99 {p99_ms} ms".format(**row) + (" ok" if row["ok"] else " FAIL"))
            if not row["ok"]:
                failures += 1
                if failures >= self.sc.max_failures:
                    break
        passing = [r for r in rows if r["ok"]]
        knee = max(passing, key=lambda r: r["delivered_per_s"]) if passing else None
        return {"scenario": asdict(self.sc), "distribution": self.distribution,
                "publisher_distribution": self.pub_distribution, "warmup": warm,
                "steps": rows, "knee": knee}


def run_scenario(stack, sc, log=print):
    run = FanoutRun(stack, sc, log)
    try:
        return run.run()
    finally:
        run.close()
