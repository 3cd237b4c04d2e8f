"""`python -m bench`: run the baseline, the product and the Socket.IO peer through the same scenarios.

The stacks run one after the other, never together, so they never compete for
the 2 cores; each is started fresh on free loopback ports and torn down after
(and once more for scenarios that ask for another number of ws workers).
"""
import argparse
import datetime as dt
import os
import platform
import sys
import time

from bench import capacity, report, scaling, wakecost
from bench.baseline_stack import BaselineStack
from bench.fanout import Scenario, run_scenario
from bench.procs import REPO
from bench.product_stack import ProductStack
from bench.socketio_stack import SocketIOStack

# 150,000: on a fast day both stacks passed 120,000 in N100 and ours in N10 (session 18), leaving
# their knees unknown; above it the 2 cores go to the load generator (~1.2 cores at 120,000).
STEPS = [100, 250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 10000, 12000, 15000, 20000, 25000, 30000,
         40000, 50000, 60000, 80000, 100000, 120000, 150000]
# Many small rooms, as chat traffic mostly is: members connect through nginx in
# random order, only the worker totals are kept even (a room spans one worker or
# several by chance), one publisher socket per room, sends spread round robin
# over the rooms.
MANY = dict(pubs_per_room=1, steps=[25, 50] + STEPS, balance="nginx")  # knees below 100/s were seen
# Sparse rooms for the Postgres cost per message: one message per room every
# 4 s (longer than the product's 2 s quiet-room spell), 6 per room per window.
# Three windows pooled (one moved 18-42 % between runs), after 12 s of the same
# sockets with nothing sent: the stack's cost before any message.
SPARSE = dict(rooms=100, subs_per_room=4, pubs_per_room=1, steps=[100], duration=24.0, balance="nginx",
              windows=3, idle_s=12.0)
FULL = {
    "N10": dict(rooms=1, subs_per_room=10, pubs_per_room=2, steps=STEPS),
    "N100": dict(rooms=1, subs_per_room=100, pubs_per_room=2, steps=STEPS),
    "N500": dict(rooms=1, subs_per_room=500, pubs_per_room=2, steps=STEPS),
    "DM2000": dict(MANY, rooms=2000, subs_per_room=2),  # direct messages
    "G200x15": dict(MANY, rooms=200, subs_per_room=15),  # small groups
    "SPARSE100x4": dict(SPARSE),
    "SPARSE100x4w4": dict(SPARSE, workers=4),  # the same with 4 ws workers
}
SMOKE_STEP = dict(duration=1.0, drain_s=2.0, max_failures=2, refine=0)
# Every smoke step must cost the workers measurable CPU: psutil reads it in 10 ms
# ticks, and on a fast day N10's 1-second step at 100/s read 0.0 CPU-s (CI, session 18).
SMOKE = {
    "N10": dict(SMOKE_STEP, rooms=1, subs_per_room=10, pubs_per_room=1, steps=[500, 1000]),
    "DM20": dict(MANY, **SMOKE_STEP, rooms=20, subs_per_room=2, steps=[100, 200]),
    "G4x5": dict(MANY, **SMOKE_STEP, rooms=4, subs_per_room=5, steps=[100, 200]),
    "SPARSE10x4": dict(SPARSE, rooms=10, steps=[20], duration=4.0, drain_s=2.0, windows=2, idle_s=2.0),
    "SPARSE10x4w4": dict(SPARSE, rooms=10, steps=[20], duration=4.0, drain_s=2.0, windows=2, idle_s=2.0, workers=4),
}


def machine():
    import psutil

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return (f"{platform.system()} {platform.release()}, {psutil.cpu_count()} cores ({model}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("Django", "channels", "channels-redis", "daphne", "redis", "websockets", "uvloop", "orjson"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# `ours+nometrics`: the product with its metrics ports off and the app's per-message
# metrics calls skipped, to price metrics at the knee (`--stacks ours,ours+nometrics`).
NO_METRICS = {"WS_METRICS_PORT": "0", "WEB_METRICS_PORT": "0"}


def make_stack(label, workers, extra_env):
    """`baseline`, `socketio` (peer), `ours`, `ours+asynccommit` (bench-only Postgres switch),
    `ours+nometrics`, `ours@uvicorn` (server swap)."""
    if label == "baseline":
        return BaselineStack(workers)
    if label == "socketio":
        return SocketIOStack(workers)
    name, _, server = label.partition("@")
    base, *options = name.split("+")
    if base != "ours" or server not in ("", "uvicorn") or set(options) - {"asynccommit", "nometrics"}:
        sys.exit(f"unknown stack {label!r}: baseline, socketio, ours, ours+asynccommit, ours+nometrics, ours@uvicorn")
    return ProductStack(workers, {**extra_env, **(NO_METRICS if "nometrics" in options else {})})


def parse(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny loads, < 60 s, no capacity targets")
    ap.add_argument("--stacks", default="baseline,ours,socketio",
                    help="comma list: baseline, ours, socketio, ours+asynccommit, ours+nometrics, ours@uvicorn")
    ap.add_argument("--scenarios", default=None, help="comma list of scenario names (default: all of the mode)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of sending per step")
    ap.add_argument("--steps", default=None, help="comma list of offered deliveries/s")
    ap.add_argument("--refine", type=int, default=None,
                    help="steps that halve the gap above the knee (default: the scenario's, 2; 0: none)")
    ap.add_argument("--workers", type=int, default=2, help="daphne workers per stack")
    ap.add_argument("--pubs", type=int, default=None, help="publisher sockets per room (default: scenario's)")
    ap.add_argument("--sub-procs", type=int, default=2, help="subscriber client processes")
    ap.add_argument("--idle-per-worker", type=int, default=None, help="idle sockets per worker (0: skip)")
    ap.add_argument("--connects", type=int, default=None, help="sockets opened to time connects/s")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE override for the product stack")
    ap.add_argument("--scaling", default="storm,rebalance",
                    help="scaling scenarios (bench/scaling.py): storm, rebalance; '' to skip")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "latest"))
    return ap.parse_args(argv)


def start_stack(label, workers, extra_env):
    """A fresh stack, up and set up for its label."""
    stack = make_stack(label, workers, extra_env)
    stack.up()
    try:
        if label.endswith("@uvicorn"):
            stack.swap_ws_to_uvicorn()
        if "+asynccommit" in label:
            # Bench-only: Postgres acknowledges COMMIT before its WAL flush.
            stack.postgres_sql("ALTER SYSTEM SET synchronous_commit = off")
            stack.postgres_sql("SELECT pg_reload_conf()")
    except BaseException:
        stack.down()
        raise
    return stack


def run_stack(label, workers, names, table, args, extra_env, results, capacity_too, idle, connects):
    """Start one stack with `workers` ws workers, run `names` (and idle capacity), tear it down."""
    if not names and not (capacity_too and (idle or connects)):
        return
    print(f"== {label}: starting stack with {workers} ws workers", flush=True)
    stack = start_stack(label, workers, extra_env)
    if label.startswith("ours"):
        results["meta"]["product_env_overrides"] = dict(stack.overrides)
    try:
        out = results["stacks"].setdefault(label, {"label": stack.label, "stores": stack.stores, "fanout": {}})
        for name in names:
            kw = dict(table[name], name=name, sub_procs=args.sub_procs, workers=workers)
            if args.duration:
                kw["duration"] = args.duration
            if args.pubs:
                kw["pubs_per_room"] = args.pubs
            if args.steps:
                kw["steps"] = [int(s) for s in args.steps.split(",")]
                if len(kw["steps"]) > 1:
                    kw["windows"] = 1  # a schedule of steps, not one rate sent again
            if args.refine is not None:
                kw["refine"] = args.refine
            print(f"== {label}: fan-out {name} (load average {os.getloadavg()[0]:.2f})", flush=True)
            out["fanout"][name] = run_scenario(stack, Scenario(**kw), log=lambda m: print(m, flush=True))
        if capacity_too and (idle or connects):
            if names:
                # On fresh workers: memory the scenarios left free inside a worker would
                # take some of the idle sockets and flatter their RSS (23 KiB each on a
                # fresh product worker measured 11-13 KiB after the scenarios).
                stack.down()
                print(f"== {label}: starting a fresh stack for idle capacity", flush=True)
                stack = start_stack(label, workers, extra_env)
            print(f"== {label}: idle capacity", flush=True)
            out["capacity"] = capacity.measure(stack, connects=connects, idle_per_worker=idle,
                                               log=lambda m: print(m, flush=True))
            if idle:
                stack.down()  # fresh workers again: the same reason as above
                print(f"== {label}: starting a fresh stack for idle sockets in small rooms", flush=True)
                stack = start_stack(label, workers, extra_env)
                out["capacity_rooms"] = capacity.measure_rooms(stack, idle_per_worker=idle,
                                                               log=lambda m: print(m, flush=True))
    finally:
        stack.down()


def main(argv=None):
    args = parse(argv)
    table = SMOKE if args.smoke else FULL
    # --scenarios '' runs no fan-out scenario (idle capacity and connects only)
    names = [n for n in args.scenarios.split(",") if n] if args.scenarios is not None else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}; choose from {list(table)}")
    idle = args.idle_per_worker if args.idle_per_worker is not None else (50 if args.smoke else 10000)
    connects = args.connects if args.connects is not None else (50 if args.smoke else 1500)
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    results = {
        "meta": {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "machine": machine(), "send_cost": wakecost.measure(), "versions": versions(), "mode": "smoke" if args.smoke else "full",
                 "loadavg_before": os.getloadavg(), "argv": sys.argv[1:], "product_env_overrides": {}},
        "scenarios": names, "stacks": {},
    }
    t_start = time.monotonic()
    for label in filter(None, args.stacks.split(",")):
        # one stack start per worker count the scenarios ask for; idle capacity on the default count
        groups = {}
        for name in names:
            groups.setdefault(table[name].get("workers") or args.workers, []).append(name)
        groups.setdefault(args.workers, [])
        for workers, group in groups.items():
            run_stack(label, workers, group, table, args, extra_env, results,
                      capacity_too=workers == args.workers and not label.startswith("socketio"),
                      idle=idle, connects=connects)
    scaling_names = [n for n in args.scaling.split(",") if n]
    if scaling_names:
        results["scaling"] = scaling.run(scaling_names, args.smoke, log=lambda m: print(m, flush=True))
    results["meta"]["seconds"] = round(time.monotonic() - t_start, 1)
    results["meta"]["loadavg_after"] = os.getloadavg()
    out_dir = report.write(results, args.out)
    print(report.markdown(results))
    if scaling_names:
        (out_dir / "scaling.md").write_text(scaling.markdown(results["scaling"]))
        print(scaling.markdown(results["scaling"]))
    print(f"wrote {out_dir}/results.json, results.md, fanout.png in {results['meta']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
