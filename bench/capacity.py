"""Idle capacity: connects/s through nginx, then sockets per worker and RSS per socket.

Connects are timed in the client processes from first dial to last welcome
frame, so the figure is what a reconnect storm sees. Idle sockets are opened
directly on each worker's port: "sockets per worker" is a property of the
worker, and going through nginx would measure nginx's worker_connections.

measure() holds its idle sockets in one room. measure_rooms() holds them as
chat traffic mostly is, in small rooms: every socket in a room of its own on
its worker, each room with one member on every worker (a direct message
between two workers' sockets). Each connect then starts a Room on its worker
(a Redis SUBSCRIBE, a Postgres read), so it prices connects and memory per
room, which one big room hides.
"""
import time

from bench.client import Proc, pids_of
from bench.cpu import CpuWindow, rss


def _fan(procs, n, urls, concurrency, deadline_s, light=False, distinct=False):
    """Open n sockets from the processes at once. distinct: each URL opened once, the
    processes taking consecutive slices of `urls` (else each cycles through all)."""
    per = [n // len(procs) + (1 if i < n % len(procs) else 0) for i in range(len(procs))]
    start = 0
    for p, k in zip(procs, per):
        p.send(op="open", n=k, urls=urls, concurrency=max(1, concurrency // len(procs)), deadline_s=deadline_s,
               light=light, start=start if distinct else 0)
        start += k
    opened, elapsed, failures = 0, 0.0, {}
    for p in procs:
        r = p.recv(timeout=deadline_s + 60)
        opened += r["opened"]
        elapsed = max(elapsed, r["elapsed"])
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    return opened, elapsed, failures


def _settled_rss(pid, deadline_s=10.0):
    """RSS once it stops moving (sockets finish their connect handlers), bounded."""
    deadline = time.monotonic() + deadline_s
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss(pid)
        if abs(now - last) < 256 * 1024:
            return now
        last = now
    return last


def _hold(stack, clients, urls, n, concurrency, deadline_s, distinct=False) -> dict:
    """Open n idle sockets on `urls` (the workers' own ports) from `clients` at once and
    keep them: per worker, the sockets alive, RSS before and after (settled) and per
    socket, and its CPU per connect while they opened."""
    pids = stack.server_pids()
    names = [f"ws{i}" for i in range(1, len(stack.ws_worker_urls) + 1)]
    before = {n: _settled_rss(pids[n]) for n in names}
    cpu = CpuWindow({n: pids[n] for n in names}).start()
    opened, elapsed, failures = _fan(clients, n, urls, concurrency, deadline_s, distinct=distinct)
    spent = cpu.seconds()
    after = {n: _settled_rss(pids[n]) for n in names}
    per_worker = sum(p.call(op="alive", timeout=60) for p in clients) / len(names)
    rows = []
    for name in names:
        per_socket = (after[name] - before[name]) / per_worker if per_worker else None
        rows.append({
            "worker": name, "alive": int(per_worker),
            "rss_before_mb": round(before[name] / 2**20, 1), "rss_after_mb": round(after[name] / 2**20, 1),
            "rss_per_socket_kib": round(per_socket / 1024, 1) if per_socket else None,
            "cpu_ms_per_connect": round(1000 * spent[name] / per_worker, 3) if per_worker else None})
    return {"workers": rows, "opened": opened, "seconds": elapsed, "failures": failures}


def measure(stack, connects=1500, connect_concurrency=200, idle_per_worker=10000, idle_concurrency=200,
            procs=2, deadline_s=100.0, log=print):
    clients = [Proc("idle") for _ in range(procs)]
    try:
        # 1. connects/s through nginx (the public entry), with a light client
        #    (bench.idle_client._Handshake) and the CPU of every process while it runs
        cpu = CpuWindow({**stack.server_pids(), **pids_of(clients)}).start()
        opened, elapsed, failures = _fan(clients, connects, [stack.ws_base + "/ws/chat/benchidle/"],
                                         connect_concurrency, deadline_s, light=True)
        connect_cpu = cpu.stop()
        connect_rate = round(opened / elapsed, 1) if elapsed else None
        log(f"  connects: {opened}/{connects} in {elapsed:.2f}s = {connect_rate}/s {failures or ''}")
        log(f"  CPU % during connects: {connect_cpu}")
        for p in clients:
            p.call(op="close_all", timeout=120)
        # 2. idle sockets held per worker, straight to each worker's port, all
        #    workers at once (halves the wall time; each worker is its own process).
        urls = [u + "/ws/chat/benchidle/" for u in stack.ws_worker_urls]
        held = _hold(stack, clients, urls, idle_per_worker * len(urls), idle_concurrency, deadline_s)
        workers = []
        for row in held["workers"]:
            workers.append({**row, "target": idle_per_worker, "opened": round(held["opened"] / len(urls)),
                            "open_s": round(held["seconds"], 2), "failures": held["failures"]})
            log(f"  {row['worker']}: ~{row['alive']}/{idle_per_worker} idle sockets, "
                f"{row['rss_per_socket_kib']} KiB RSS each {held['failures'] or ''}")
        for p in clients:
            p.call(op="close_all", timeout=180)
        return {"connects": {"attempted": connects, "opened": opened, "seconds": round(elapsed, 3),
                             "per_s": connect_rate, "concurrency": connect_concurrency, "failures": failures,
                             "cpu_pct": connect_cpu},
                "idle": workers,
                "sockets_per_worker": min((w["alive"] for w in workers), default=0),
                "rss_per_socket_kib": max((w["rss_per_socket_kib"] or 0 for w in workers), default=None)}
    finally:
        for p in clients:
            p.close()


def measure_rooms(stack, idle_per_worker=10000, concurrency=200, procs=2, deadline_s=300.0, log=print):
    """idle_per_worker sockets on each worker, one per room per worker, straight to the
    workers' ports, all workers at once: RSS per socket, and connects/s and ws CPU per
    connect while every connect starts a Room. Needs a fresh stack (see measure())."""
    clients = [Proc("idle") for _ in range(procs)]
    try:
        urls = [f"{u}/ws/chat/benchdm{r}/" for r in range(idle_per_worker) for u in stack.ws_worker_urls]
        held = _hold(stack, clients, urls, len(urls), concurrency, deadline_s, distinct=True)
        n_open, elapsed, fails = held["opened"], held["seconds"], held["failures"]
        workers = []
        for row in held["workers"]:
            workers.append({**row, "target": idle_per_worker, "rooms": idle_per_worker})
            log(f"  {row['worker']}: ~{row['alive']} idle sockets in as many rooms, {row['rss_per_socket_kib']} KiB "
                f"RSS and {row['cpu_ms_per_connect']} ms of CPU each")
        per_s = round(n_open / elapsed, 1) if elapsed else None
        log(f"  connects into new rooms: {n_open}/{len(urls)} in {elapsed:.2f}s = {per_s}/s {fails or ''}")
        for p in clients:
            p.call(op="close_all", timeout=180)
        return {"idle": workers, "opened": n_open, "attempted": len(urls), "seconds": round(elapsed, 3),
                "connects_per_s": per_s, "failures": fails,
                "sockets_per_worker": min((w["alive"] for w in workers), default=0),
                "rss_per_socket_kib": max((w["rss_per_socket_kib"] or 0 for w in workers), default=None),
                "cpu_ms_per_connect": max((w["cpu_ms_per_connect"] or 0 for w in workers), default=None)}
    finally:
        for p in clients:
            p.close()
