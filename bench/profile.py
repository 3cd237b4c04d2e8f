"""`python -m bench.profile`: where a ws worker's time goes under fan-out (py-spy).

Holds one fan-out step at a fixed offered load while `py-spy record` samples
worker 1, then folds the raw stacks into the few buckets that decide what to
optimise (Twisted/autobahn framing, Channels dispatch, the Redis layer, JSON,
thread hops, idle). Writes the raw collapsed stacks and a speedscope file next
to the summary so any bucket can be opened in detail.
"""
import argparse
import json
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench.__main__ import FULL, make_stack
from bench.fanout import FanoutRun, Scenario
from bench.procs import REPO, VENV_BIN

# First match wins, tested against each frame from the leaf upwards: the
# innermost recognisable layer is charged for the sample.
BUCKETS = [
    ("idle (event loop waiting)", re.compile(r"\bselect \(selectors|\bpoll \(selectors|_run_once|epoll")),
    ("thread hop (sync_to_async / executor)", re.compile(r"asgiref/sync|concurrent/futures|threading\.py")),
    ("Postgres (psycopg)", re.compile(r"psycopg")),
    ("Redis layer (channels_redis, redis-py)", re.compile(r"channels_redis|/redis/")),
    ("msgpack / JSON", re.compile(r"msgpack|json")),
    ("WebSocket framing (autobahn)", re.compile(r"autobahn")),
    ("daphne server", re.compile(r"daphne/")),
    ("Twisted transport / asyncio reactor", re.compile(r"twisted/")),
    ("Channels consumer / dispatch", re.compile(r"channels/")),
    ("chat app code", re.compile(r"django_app/chat|/chat/")),
    ("asyncio internals", re.compile(r"asyncio/")),
    ("Django", re.compile(r"django/")),
]


def fold(raw_path):
    """Collapsed stacks -> (bucket shares, top leaf functions)."""
    buckets, leaves, total = Counter(), Counter(), 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        leaves[frames[-1].strip()] += n
        for frame in reversed(frames):
            name = next((b for b, rx in BUCKETS if rx.search(frame)), None)
            if name:
                buckets[name] += n
                break
        else:
            buckets["other"] += n
    pct = {k: round(100.0 * v / total, 1) for k, v in buckets.most_common()} if total else {}
    top = [(f, round(100.0 * v / total, 1)) for f, v in leaves.most_common(15)] if total else []
    return {"samples": total, "buckets_pct": pct, "top_leaf_pct": top}


def pyspy(pid, seconds, out_base, idle=False, native=False):
    base = [str(VENV_BIN / "py-spy"), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
            ] + (["--idle"] if idle else []) + (["--native"] if native else ["--nonblocking"])
    raw = subprocess.Popen(base + ["-f", "raw", "-o", f"{out_base}.txt"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    return raw


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument("--stack", default="ours", help="baseline, ours, ours+asynccommit, ours@uvicorn")
    ap.add_argument("--pubs", type=int, default=2, help="publisher sockets")
    ap.add_argument("--subs", type=int, default=100)
    ap.add_argument("--scenario", default="", help="a `make bench` scenario (e.g. DM2000, G200x15) instead of --subs/--pubs")
    ap.add_argument("--rate", type=int, default=3000, help="offered deliveries/s held while sampling")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--native", action="store_true", help="py-spy --native: C frames too (uvloop, libpq)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the product stack")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "profile"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = args.scenario or f"N{args.subs}"
    tag = f"{args.stack}-{shape}-{args.rate}".replace("@", "_").replace("+", "_")
    stack = make_stack(args.stack, 2, dict(kv.split("=", 1) for kv in args.env))
    stack.up()
    try:
        if args.stack.endswith("@uvicorn"):
            stack.swap_ws_to_uvicorn()
        if args.scenario:
            spec = dict(FULL[args.scenario], steps=[args.rate], duration=args.seconds + 3, drain_s=5)
        else:
            spec = dict(subs_per_room=args.subs, pubs_per_room=args.pubs, steps=[args.rate],
                        duration=args.seconds + 3, drain_s=5)
        run = FanoutRun(stack, Scenario(name="profile", **spec), log=print)
        try:
            run.connect()
            pid = stack.server_pids()["ws1"]
            result = {}
            # py-spy starts 1 s into the step so the sample window is steady state.
            timer = threading.Timer(1.0, lambda: result.setdefault(
                "proc", pyspy(pid, args.seconds, out / f"{tag}-ws1", native=args.native)))
            timer.start()
            row = run.run_step(1, args.rate)
            timer.join()
            proc = result["proc"]
            _o, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                sys.exit(f"py-spy failed: {err[-2000:]}")
        finally:
            run.close()
    finally:
        stack.down()
    summary = {"stack": args.stack, "rate": args.rate, "subs": args.subs, "scenario": args.scenario, "pubs": args.pubs, "step": row,
               "profile": fold(out / f"{tag}-ws1.txt")}
    (out / f"{tag}-summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("stack", "rate", "subs")}, indent=None))
    print(f"step: delivered {row['delivered_per_s']}/s lost {row['lost']} p50 {row['p50_ms']} p99 {row['p99_ms']} "
          f"cpu {row['cpu_pct']}")
    for k, v in summary["profile"]["buckets_pct"].items():
        print(f"  {v:5.1f}%  {k}")
    print("top leaf frames:")
    for f, v in summary["profile"]["top_leaf_pct"]:
        print(f"  {v:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
