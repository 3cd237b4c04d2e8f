"""Idle capacity: connects/s through nginx, then sockets per worker and RSS per socket.

Connects are timed in the client processes from first dial to last welcome
frame, so the figure is what a reconnect storm sees. Idle sockets are opened
directly on each worker's port: "sockets per worker" is a property of the
worker, and going through nginx would measure nginx's worker_connections.
"""
import time

from bench.client import Proc, pids_of
from bench.cpu import CpuWindow, rss


def _fan(procs, n, urls, concurrency, deadline_s, light=False):
    per = [n // len(procs) + (1 if i < n % len(procs) else 0) for i in range(len(procs))]
    for p, k in zip(procs, per):
        p.send(op="open", n=k, urls=urls, concurrency=max(1, concurrency // len(procs)), deadline_s=deadline_s,
               light=light)
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
        pids = stack.server_pids()
        names = [f"ws{i}" for i in range(1, len(stack.ws_worker_urls) + 1)]
        before = {n: _settled_rss(pids[n]) for n in names}
        urls = [u + "/ws/chat/benchidle/" for u in stack.ws_worker_urls]
        n_open, el, fails = _fan(clients, idle_per_worker * len(urls), urls, idle_concurrency, deadline_s)
        after = {n: _settled_rss(pids[n]) for n in names}
        alive = sum(p.call(op="alive", timeout=60) for p in clients)
        per_worker = alive / len(urls)
        workers = []
        for n in names:
            per_socket = (after[n] - before[n]) / per_worker if per_worker else None
            workers.append({
                "worker": n, "target": idle_per_worker, "opened": round(n_open / len(urls)),
                "alive": int(per_worker), "open_s": round(el, 2),
                "rss_before_mb": round(before[n] / 2**20, 1), "rss_after_mb": round(after[n] / 2**20, 1),
                "rss_per_socket_kib": round(per_socket / 1024, 1) if per_socket else None, "failures": fails})
            log(f"  {n}: ~{round(per_worker)}/{idle_per_worker} idle sockets, "
                f"{workers[-1]['rss_per_socket_kib']} KiB RSS each {fails or ''}")
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
