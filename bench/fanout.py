"""Cross-worker fan-out: step the offered load up until the stack breaks.

A step passes when every message sent reached every subscriber of its room
(0 lost) with p99 <= the latency budget. The knee is the highest delivered/s of
a passing step. Steps stop after `max_failures` failing steps, so an overloaded
stack never turns the run into a long wait. Then up to `refine` more steps halve
the gap between the highest passing step and the failing one above it (12,000
and 15,000 → 13,500 → 12,800 or 14,200): two stacks that break between the
same two scheduled steps get knees that tell them apart.

Per step, the ws workers' CPU-seconds from the first send to the end of the
drain give deliveries per server CPU-second; for a stack that stores, the
Postgres transactions of its database over all the steps, divided by the
messages stored, give transactions per stored message.
"""
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from bench.client import Proc, pids_of
from bench.cpu import CpuWindow, idle_cpu_ms_per_s


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
    refine: int = 2  # steps that halve the gap above the knee (0: the scheduled steps only)
    balance: str = "room"  # "room": even per room per worker; "nginx": where nginx puts each socket
    workers: int = 0  # ws workers the stack runs for this scenario (0: the run's --workers)
    # A fixed-rate scenario (one step) sends its step this many times, and its figures pool
    # them: one 24-second sparse window moved 18-42 % between runs (session 18).
    windows: int = 1
    # Seconds the servers' CPU is read with every socket connected and nothing sent
    # (0: none): what the stack costs before any message, so a fixed-rate scenario's
    # CPU splits into that and a cost per message.
    idle_s: float = 0.0

    def __post_init__(self):
        if self.windows > 1 and len(self.steps) != 1:
            raise ValueError(f"{self.name}: windows={self.windows} needs a fixed-rate scenario (one step)")


def between(rows, closest=0.05):
    """The offered rate halfway between the highest passing step and the lowest
    failing step above it (3 significant figures), or None: no such pair, or the
    two already within `closest` of each other (below the run-to-run noise)."""
    passed = [r["target_per_s"] for r in rows if r["ok"]]
    if not passed:
        return None
    lo = max(passed)
    above = [r["target_per_s"] for r in rows if not r["ok"] and r["target_per_s"] > lo]
    if not above or min(above) - lo <= closest * lo:
        return None
    return int(float(f"{(lo + min(above)) / 2:.3g}"))


def _percentiles(lat_us):
    if lat_us.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(lat_us, [50, 95, 99]) / 1000.0
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(lat_us.max()) / 1000.0, 2)}


def since(totals: dict, before: dict) -> dict:
    """Per-key growth of cumulative counters (the client processes count closes over the
    whole scenario): what happened in one step only, zero entries dropped."""
    return {k: n - before.get(k, 0) for k, n in totals.items() if n - before.get(k, 0) > 0}


def _split(total, parts):
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class FanoutRun:
    """Owns the client processes for one scenario against one running stack."""

    def __init__(self, stack, sc, log=print):
        self.stack, self.sc, self.log = stack, sc, log
        self.rooms = [f"b{sc.name}_{i}" for i in range(sc.rooms)]
        self.subs = [Proc("sub") for _ in range(sc.sub_procs)]
        self.pub = Proc("pub")
        self.workers = len(stack.ws_worker_urls)
        self.distribution = {}
        self.pub_distribution = {}
        self.spans = {}
        self.dialect = getattr(stack, "dialect", "chat")
        self.closed_before = {}  # the client processes' cumulative closes at the last step's end

    def close(self):
        for p in self.subs + [self.pub]:
            p.close()

    # ---------------------------------------------------------------- sockets
    def ensure_subscribers(self, rounds=3):
        """Connect (or top up after a shed) every subscriber, balanced over the workers.

        A socket the server closes while the others are still connecting (e.g. a
        worker rebalancing the previous scenario's leftovers with 1012) is topped
        up in the next round, as a real client would reconnect."""
        for attempt in range(1, rounds + 1):
            alive, want, failures, dist = self._ensure_round()
            if alive >= want:
                return dist
            if attempt < rounds:
                self.log(f"  {self.sc.name}: {alive}/{want} subscribers connected ({failures}); topping up")
        raise RuntimeError(f"only {alive}/{want} subscribers connected ({failures})")

    def _ensure_round(self):
        shares = [dict() for _ in self.subs]
        for room in self.rooms:
            if self.sc.balance != "room":
                # a room's members spread over the client processes; nginx picks their workers
                for i, k in enumerate(_split(self.sc.subs_per_room, len(self.subs))):
                    if k:
                        shares[i][room] = k
                continue
            # Whole multiples of the worker count per process, so each process's
            # own per-worker quota adds up to an exact global balance.
            units, rest = divmod(self.sc.subs_per_room, self.workers)
            for i, u in enumerate(_split(units, len(self.subs))):
                shares[i][room] = u * self.workers + (rest if i == 0 else 0)
        # thousands of sockets on a loaded 2-core machine can take minutes: bounded, scaled
        deadline_s = 60.0 + 0.05 * self.sc.rooms * self.sc.subs_per_room
        for p, rooms in zip(self.subs, shares):
            p.send(op="ensure", urls=[self.stack.ws_base], rooms=rooms, workers=self.workers,
                   dialect=self.dialect, balance=self.sc.balance, deadline_s=deadline_s)
        dist, alive, failures, spans = {}, 0, {}, {}
        for p in self.subs:
            r = p.recv(timeout=deadline_s + 120)
            alive += r["alive"]
            for w, n in r["workers"].items():
                dist[w] = dist.get(w, 0) + n
            for k, n in r["failures"].items():
                failures[k] = failures.get(k, 0) + n
            for room, ws in r.get("spans", {}).items():
                spans.setdefault(room, set()).update(ws)
        self.distribution = dist
        # how many rooms span 1, 2, ... workers (a room on one worker needs no cross-worker hop)
        hist = {}
        for ws in spans.values():
            hist[str(len(ws))] = hist.get(str(len(ws)), 0) + 1
        self.spans = dict(sorted(hist.items()))
        return alive, self.sc.rooms * self.sc.subs_per_room, failures, dist

    def connect(self):
        dist = self.ensure_subscribers()
        self.pub_distribution = self.pub.call(op="connect", url=self.stack.ws_base, rooms=self.rooms,
                                              per_room=self.sc.pubs_per_room, n_workers=self.workers,
                                              dialect=self.dialect, balance=self.sc.balance,
                                              timeout=120 + 0.1 * self.sc.rooms * self.sc.pubs_per_room)
        self.log(f"  {self.sc.name}: {sum(dist.values())} subscribers over workers {sorted(dist.values())}, "
                 f"publishers {sorted(self.pub_distribution.values())}, rooms spanning k workers {self.spans}")
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
        cpu_s = cpu.seconds()  # send start .. drain end: every delivery's server work
        cpu_wall_s = cpu.elapsed()
        ws_cpu_s = sum(v for k, v in cpu_s.items() if k.startswith("ws"))
        lat, received, closed, resumed, alive = [], 0, {}, {}, 0
        for p in self.subs:
            r = p.call(op="collect", step=step, timeout=60)
            received += r["received"]
            alive += r["alive"]
            lat.append(np.frombuffer(r["lat_us"], dtype=np.int64))
            for code, n in r["closed"].items():
                closed[str(code)] = closed.get(str(code), 0) + n
            for code, n in r.get("resumed", {}).items():
                resumed[str(code)] = resumed.get(str(code), 0) + n
        lat_us = np.concatenate(lat) if lat else np.array([], dtype=np.int64)
        # A socket lost in an earlier step was topped up before this one: it fails that step only.
        closed, self.closed_before = since(closed, self.closed_before), closed
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
            "shed_sockets": closed,  # closed in this step and not resumed: their messages count as lost
            "resumed_sockets": resumed,  # closed with 1012/1013, resumed with ?after= (cumulative)
            "alive_after": alive,
            **_percentiles(lat_us),
            "cpu_pct": cpu_pct,
            "ws_cpu_s": round(ws_cpu_s, 6),  # µs: pooled() and above_idle() sum these; 3 decimals moved a smoke window's figure 2.5 %
            "cpu_window_s": round(cpu_wall_s, 3),
            "deliveries_per_ws_cpu_s": round(min(received, expected) / ws_cpu_s) if ws_cpu_s > 0 else None,
        }
        row["ok"] = bool(row["lost"] == 0 and row["p99_ms"] is not None and row["p99_ms"] <= sc.p99_budget_ms
                         and not closed)
        return row

    def _db_settled(self):
        """(transactions, stored messages, probes made) once the database's counters stop moving.

        Waits out the product's quiet-room checks (2 s after a room's last
        message) and Postgres's stats flush (at most 1 s behind an active
        backend); the probes' own transactions are subtracted by the caller.
        """
        time.sleep(3.0)
        last = self.stack.db_counts()
        for _ in range(10):  # bounded: ~15 s
            time.sleep(1.5)
            now = self.stack.db_counts()
            if now[1] == last[1] and now[0] - last[0] <= self.stack.probe_xacts:
                return now
            last = now
        return last

    def _step(self, rows, offered, refined=False):
        """Run one step (topping up sockets a previous step lost first), log it, add its row."""
        if rows and (rows[-1]["shed_sockets"] or rows[-1]["alive_after"] < self.sc.rooms * self.sc.subs_per_room):
            self.ensure_subscribers()
        row = self.run_step(len(rows) + 1, offered)
        row["refined"] = refined
        rows.append(row)
        self.log("  step {step}: offered {offered_per_s}/s delivered {delivered_per_s}/s lost {lost} "
                 "p50 {p50_ms} p99 {p99_ms} ms".format(**row) + (" ok" if row["ok"] else " FAIL")
                 + (" (refined)" if row["refined"] else ""))
        return row

    def run(self):
        """Warm up, then step the offered load; returns the scenario's result dict."""
        self.connect()
        # at least one message per room, so no step pays for a room's first message
        # (its Postgres row, a worker's first subscription) where the others do not
        sc = self.sc
        warm = self.run_step(0, max(min(sc.steps[0], 200), sc.rooms * sc.subs_per_room / sc.duration))
        self.log(f"  warm-up: received {warm['received']}/{warm['expected']}")
        stores = getattr(self.stack, "stores", False)
        db0 = self._db_settled() if stores else None
        idle = None
        if sc.idle_s:
            if not stores:
                time.sleep(3.0)  # as long as _db_settled's shortest wait: both stacks idle alike before
            idle = self.idle_window()
        rows, failures = [], 0
        for offered in self.sc.steps * self.sc.windows:
            if not self._step(rows, offered)["ok"]:
                failures += 1
                if failures >= self.sc.max_failures:
                    break
        for _ in range(self.sc.refine):
            offered = between(rows)
            if offered is None:
                break
            self._step(rows, offered, refined=True)
        rows.sort(key=lambda r: r["target_per_s"])
        db = None
        if stores:
            db1 = self._db_settled()
            probes = db1[2] - db0[2]
            xacts = db1[0] - db0[0] - probes * self.stack.probe_xacts  # less the probes' own transactions
            stored = db1[1] - db0[1]
            db = {"transactions": xacts, "stored": stored, "probes": probes, "probe_xacts": self.stack.probe_xacts,
                  "per_stored_message": round(xacts / stored, 3) if stored else None}
            self.log(f"  Postgres: {xacts} transactions for {stored} stored messages = "
                     f"{db['per_stored_message']} per message")
        passing = [r for r in rows if r["ok"]]
        knee = max(passing, key=lambda r: r["delivered_per_s"]) if passing else None
        windows = pooled(rows) if sc.windows > 1 and rows else None
        if windows is not None:
            knee = windows if windows["ok"] else None
            self.log(f"  {sc.name}: {len(rows)} windows pooled: {windows['deliveries_per_ws_cpu_s']} deliveries "
                     f"per ws CPU-s (windows: {windows['windows']})")
        return {"scenario": asdict(self.sc), "workers": self.workers, "distribution": self.distribution,
                "rooms_spanning_workers": self.spans, "publisher_distribution": self.pub_distribution,
                "warmup": warm, "idle": idle, "steps": rows, "pooled": windows, "knee": knee, "postgres": db,
                "per_message_above_idle": above_idle(rows, idle),
                "loadavg": list(os.getloadavg())}

    def idle_window(self):
        """The ws workers' CPU with every socket connected and nothing sent, for `idle_s` seconds
        (the stack's own timers, keepalive pings and health probes)."""
        ws = {k: v for k, v in self.stack.server_pids().items() if k.startswith("ws")}
        per, wall = idle_cpu_ms_per_s(ws, self.sc.idle_s)
        total = round(sum(per.values()), 3)
        self.log(f"  idle: {total} ms of ws CPU per second over {len(per)} workers ({wall:.1f} s, nothing sent)")
        return {"seconds": round(wall, 1), "ws_cpu_ms_per_s": total, "per_worker": per}


def pooled(rows):
    """A fixed-rate scenario's windows as one row: deliveries and ws CPU-seconds summed over
    every window, latencies those of its worst window (by p99), ok only if every one was;
    `windows` keeps each window's own deliveries per ws CPU-s, to show their spread."""
    delivered = sum(min(r["received"], r["expected"]) for r in rows)
    cpu = sum(r["ws_cpu_s"] for r in rows)
    worst = max(rows, key=lambda r: (r["p99_ms"] is None, r["p99_ms"] or 0))
    return {**worst, "ok": all(r["ok"] for r in rows), "lost": sum(r["lost"] for r in rows),
            "sent": sum(r["sent"] for r in rows), "ws_cpu_s": round(cpu, 6),
            "deliveries_per_ws_cpu_s": round(delivered / cpu) if cpu > 0 else None,
            "windows": [r["deliveries_per_ws_cpu_s"] for r in rows]}


def above_idle(rows, idle):
    """ms of ws CPU per message sent beyond what the idle stack spends in the same time, over
    the passing steps, or None without an idle window."""
    ok = [r for r in rows if r["ok"] and r.get("cpu_window_s")]
    sent = sum(r["sent"] for r in ok)
    if not idle or not sent:
        return None
    extra_s = sum(r["ws_cpu_s"] for r in ok) - idle["ws_cpu_ms_per_s"] / 1000 * sum(r["cpu_window_s"] for r in ok)
    return round(1000 * extra_s / sent, 3)


def run_scenario(stack, sc, log=print):
    """The scenario's results; a scenario that cannot run is recorded as an error, not a crash of the run."""
    run = FanoutRun(stack, sc, log)
    try:
        return run.run()
    except (RuntimeError, TimeoutError) as exc:
        log(f"  {sc.name}: ERROR {exc}")
        return {"scenario": asdict(sc), "workers": run.workers, "error": str(exc)[:500], "steps": [],
                "knee": None, "postgres": None, "distribution": run.distribution, "loadavg": list(os.getloadavg())}
    finally:
        run.close()
