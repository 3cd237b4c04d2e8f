"""The per-scenario, per-stack comparison table (issue 14) and its verdicts.

One row per scenario and stack: the loss-free knee in deliveries/s, the same as
a share of that stack's N10 knee, deliveries per ws-worker CPU-second (the
server processes only: daphne workers for ours and the baseline, the Node
processes for the Socket.IO peer; never nginx or the load generator), p99 at
the knee, and Postgres transactions per stored message ("n/a" for stacks that
store nothing). Fixed-rate scenarios (one step, e.g. SPARSE100x4) report their
one step in the knee columns.

Deliveries per ws CPU-second at each stack's own knee compare different loads,
and both stacks get cheaper per delivery as the load rises (more messages per
wake-up and per write). same_load() compares the two stacks doing the same
work: every offered rate both delivered loss-free in the scenario (the report
shows the highest, and the median and range of the ratio over all of them).

A stack that passed the highest scheduled step has a knee above it, unknown:
its knee reads "≥" that rate, a share of its N10 knee at the step ceiling is an
upper bound ("≤"), and two stacks that both passed it are not ranked by knee.
"""

TARGET_MANY_VS_N10 = 0.5  # many-room knee >= 50 % of the same run's N10 knee
TARGET_XACT_PER_MSG = 1.2  # Postgres transactions per stored message, sparse rooms
NO_STORE = "n/a (stores nothing)"


def _res(results, label, name):
    return results["stacks"].get(label, {}).get("fanout", {}).get(name) or {}


def _knee(res):
    """The knee row, or a fixed-rate scenario's pooled windows or one step even when they failed."""
    if res.get("knee"):
        return res["knee"]
    if res.get("pooled"):
        return res["pooled"]
    steps = res.get("steps") or []
    return steps[0] if len(steps) == 1 else {}


def is_many_room(res):
    sc = res.get("scenario") or {}
    return sc.get("rooms", 1) > 1 and len(sc.get("steps", [])) > 1


def is_sparse(res):
    sc = res.get("scenario") or {}
    return len(sc.get("steps", [])) == 1


def at_ceiling(res) -> bool:
    """The stack passed its scenario's highest scheduled step: its knee is a lower bound."""
    steps = (res.get("scenario") or {}).get("steps") or []
    return len(steps) > 1 and any(r.get("ok") and r.get("target_per_s") == max(steps) for r in res.get("steps") or ())


def rows(results):
    """[(scenario, stack, dict of figures)] in scenario order, stacks in run order."""
    out = []
    for name in results["scenarios"]:
        for label, st in results["stacks"].items():
            res = _res(results, label, name)
            if not res:
                continue
            knee = _knee(res)
            n10_res = _res(results, label, "N10")
            n10 = _knee(n10_res).get("delivered_per_s")
            pg = res.get("postgres")
            out.append((name, label, {
                "workers": res.get("workers"),
                "knee_per_s": knee.get("delivered_per_s"),
                "knee_ok": bool(knee.get("ok")),
                "ceiling": at_ceiling(res),
                "n10_ceiling": at_ceiling(n10_res),
                "vs_n10": round(knee["delivered_per_s"] / n10, 2) if n10 and knee.get("delivered_per_s")
                and is_many_room(res) else None,
                "per_ws_cpu_s": knee.get("deliveries_per_ws_cpu_s"),
                "windows": knee.get("windows"),  # a fixed-rate scenario's windows, each alone
                "idle_ms_per_s": (res.get("idle") or {}).get("ws_cpu_ms_per_s"),
                "above_idle_ms": res.get("per_message_above_idle"),
                "p99_ms": knee.get("p99_ms"),
                "xact_per_msg": (pg or {}).get("per_stored_message") if st.get("stores") else NO_STORE,
                "xacts": (pg or {}).get("transactions"), "stored": (pg or {}).get("stored"),
                "spans": res.get("rooms_spanning_workers"),
                "loadavg": (res.get("loadavg") or [None])[0],
                "error": res.get("error"),
            }))
    return out


def same_load(results, name, a="ours", b="socketio"):
    """[(offered rate, a's, b's deliveries per ws CPU-s)] at every step both passed loss-free, lowest first."""
    passed = [_passed(_res(results, label, name)) for label in (a, b)]
    return [(rate, passed[0][rate], passed[1][rate]) for rate in sorted(set(passed[0]) & set(passed[1]))]


def _passed(res):
    """{offered rate: deliveries per ws CPU-s} of the passing steps (a fixed-rate scenario's
    windows pooled into one)."""
    steps = [_knee(res)] if res.get("pooled") else res.get("steps") or []
    return {s["target_per_s"]: s["deliveries_per_ws_cpu_s"] for s in steps
            if s.get("ok") and s.get("deliveries_per_ws_cpu_s")}


def _median(ordered):
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def same_load_markdown(results, a="ours", b="socketio"):
    lines = []
    for name in results["scenarios"]:
        steps = same_load(results, name, a, b)
        if not steps:
            continue
        rate, x, y = steps[-1]
        ratios = sorted(p / q for _r, p, q in steps)
        count = f"{len(ratios)} step{'s' if len(ratios) > 1 else ''}"
        lines.append(f"| {name} | {rate:,} | {_f(x)} | {_f(y)} | {x / y:.2f}× "
                     f"| {_median(ratios):.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f}×, {count}) |")
    if not lines:
        return ""
    return "\n".join([f"Same offered load: {a} and {b} at the highest step both passed loss-free, and {a} ÷ {b} "
                      "at every step both passed (deliveries per ws CPU-s; at low rates each message travels "
                      "alone, at high rates they share statements, publishes and writes):", "",
                      f"| scenario | highest common step, deliveries/s | {a} | {b} | {a} ÷ {b} "
                      f"| {a} ÷ {b}, every common step: median (range) |",
                      "| --- | ---: | ---: | ---: | ---: | ---: |"] + lines)


def _f(v, suffix=""):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v < 100:
        return f"{v:,.2f}{suffix}"
    return f"{v:,.0f}{suffix}"


def _knee_text(r):
    return ("≥ " if r.get("ceiling") else "") + _f(r["knee_per_s"])


def _vs_n10_text(r):
    """The share of N10's knee, as a bound when either knee is at its step ceiling."""
    text = _f(r["vs_n10"], "×")
    if r["vs_n10"] is None or not (r.get("ceiling") or r.get("n10_ceiling")):
        return text
    if r.get("ceiling") and r.get("n10_ceiling"):
        return f"{text} (both at the last step)"
    return ("≥ " if r.get("ceiling") else "≤ ") + text


def _per_cpu_text(r):
    """Deliveries per ws CPU-s; for pooled windows, with each window's own figure's range."""
    text = _f(r["per_ws_cpu_s"])
    found = [w for w in r.get("windows") or () if w]
    if len(found) > 1:
        text += f" ({_f(min(found))}–{_f(max(found))} in {len(found)} windows)"
    return text


def idle_markdown(results):
    """Fixed-rate scenarios with an idle window: the stack's cost before any message, and per
    message above it."""
    lines = []
    for name, label, r in rows(results):
        if r.get("idle_ms_per_s") is None:
            continue
        per_worker = r["idle_ms_per_s"] / r["workers"] if r["workers"] else None
        lines.append(f"| {name} | {label} | {_f(r['workers'])} | {_f(r['idle_ms_per_s'])} | {_f(per_worker)} "
                     f"| {_f(r['above_idle_ms'])} |")
    if not lines:
        return ""
    return "\n".join(["Where the ws CPU of a fixed-rate scenario goes: the same sockets connected with nothing "
                      "sent (timers, keepalive pings, health probes), and per message sent above that:", "",
                      "| scenario | stack | ws workers | idle ws CPU, ms per s | per worker | ws CPU per message above "
                      "idle, ms |", "| --- | --- | ---: | ---: | ---: | ---: |"] + lines)


def markdown(results):
    lines = ["| scenario | stack | ws workers | knee deliveries/s | ÷ own N10 knee | deliveries per ws CPU-s "
             "| p99 ms | Postgres xact per stored msg | load avg (1 min, at end) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, label, r in rows(results):
        knee = _knee_text(r) + ("" if r["knee_ok"] else " (failed)")
        if r.get("error"):
            knee = f"error: {r['error'][:80]}"
        xact = r["xact_per_msg"]
        if isinstance(xact, float):
            xact = f"{xact:.2f} ({r['xacts']:,}/{r['stored']:,})"
        lines.append(f"| {name} | {label} | {_f(r['workers'])} | {knee} | {_vs_n10_text(r)} "
                     f"| {_per_cpu_text(r)} | {_f(r['p99_ms'])} | {_f(xact)} | {_f(r['loadavg'])} |")
    peers = [st["label"] for st in results["stacks"].values() if not st.get("stores")]
    if peers:
        lines += ["", "Stacks that store nothing (" + "; ".join(peers) + ") skip the Postgres write every "
                  "message of ours makes: compare their figures with that in mind."]
    return "\n".join(lines)


def targets(results):
    """Issue 14's targets: (target, measured, met) for ours."""
    out = []
    by = {(n, s): r for n, s, r in rows(results)}
    for name in results["scenarios"]:
        res = _res(results, "ours", name)
        if res and is_many_room(res):
            r = by[(name, "ours")]
            # Against an N10 knee at its step ceiling the share is an upper bound: not proof.
            out.append((f"{name}: knee ≥ 50 % of ours' N10 knee", _vs_n10_text(r),
                        bool(r["vs_n10"] and r["vs_n10"] >= TARGET_MANY_VS_N10 and not r["n10_ceiling"])))
        if res and is_sparse(res) and res.get("postgres"):
            v = res["postgres"].get("per_stored_message")
            out.append((f"{name} ({res.get('workers')} workers): ≤ 1.2 Postgres xact per stored message", _f(v),
                        bool(v is not None and v <= TARGET_XACT_PER_MSG)))
        peer = by.get((name, "socketio"))
        if res and peer:
            o, p = by[(name, "ours")]["per_ws_cpu_s"], peer["per_ws_cpu_s"]
            where = "" if is_sparse(res) else ", each at its knee"
            out.append((f"{name}: ahead of Socket.IO in deliveries per server CPU-s{where}",
                        f"{_f(o)} vs {_f(p)}", bool(o and p and o > p)))
            found = same_load(results, name)
            if found and not is_sparse(res):
                ratios = sorted(o / p for _rate, o, p in found)
                out.append((f"{name}: the same, at every offered load both passed ({len(ratios)} steps)",
                            f"ours ÷ Socket.IO {_median(ratios):.2f}× median, {ratios[0]:.2f}–{ratios[-1]:.2f}×",
                            ratios[0] > 1))
            if not is_sparse(res):
                ours = by[(name, "ours")]
                o, p = ours["knee_per_s"], peer["knee_per_s"]
                both = ours["ceiling"] and peer["ceiling"]  # both passed the last step: not ranked
                out.append((f"{name}: ahead of Socket.IO in loss-free knee",
                            f"{_knee_text(ours)} vs {_knee_text(peer)}" + (", both passed the last step" if both else ""),
                            bool(o and p and o > p and not both)))
    return out


def targets_markdown(results):
    found = targets(results)
    if not found:
        return ""
    lines = ["| target (issue 14) | measured (ours) | met |", "| --- | ---: | :---: |"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in found]
    return "\n".join(lines)
