"""Turn one run's results into the three outputs: JSON, a markdown table, a PNG plot.

Every "ours" figure sits next to the baseline's from the same run with the
ratio, because absolute numbers on a shared 2-core box mean little alone.
"""
import json
from pathlib import Path

from bench import report_rooms

TARGET_KNEE_RATIO = 20.0
TARGET_RATE, TARGET_P99_MS = 10000, 50.0
TARGET_IDLE, TARGET_RSS_KIB, TARGET_CONNECTS = 10000, 20.0, 2000


def _ratio(ours, base, invert=False):
    if not ours or not base:
        return None
    return round((base / ours) if invert else (ours / base), 2)


def _knee(stack, name):
    res = stack.get("fanout", {}).get(name) or {}
    return res.get("knee") or {}


def summary(results):
    """Headline rows (metric, baseline, ours, ratio) and the target verdicts."""
    base, ours = results["stacks"].get("baseline", {}), results["stacks"].get("ours", {})
    rows = []
    for name in results["scenarios"]:
        kb, ko = _knee(base, name), _knee(ours, name)
        # A knee at the last scheduled step is a lower bound (report_rooms.at_ceiling).
        bound = "; ours passed the last step: ≥" if report_rooms.at_ceiling(ours.get("fanout", {}).get(name) or {}) else ""
        rows.append((f"{name}: loss-free delivered/s (knee{bound})", kb.get("delivered_per_s"), ko.get("delivered_per_s"),
                     _ratio(ko.get("delivered_per_s"), kb.get("delivered_per_s"))))
        rows.append((f"{name}: p99 at knee, ms", kb.get("p99_ms"), ko.get("p99_ms"),
                     _ratio(ko.get("p99_ms"), kb.get("p99_ms"), invert=True)))
    cb, co = base.get("capacity", {}), ours.get("capacity", {})
    if cb or co:
        rows.append(("idle sockets per worker", cb.get("sockets_per_worker"), co.get("sockets_per_worker"),
                     _ratio(co.get("sockets_per_worker"), cb.get("sockets_per_worker"))))
        rows.append(("RSS per idle socket, KiB", cb.get("rss_per_socket_kib"), co.get("rss_per_socket_kib"),
                     _ratio(co.get("rss_per_socket_kib"), cb.get("rss_per_socket_kib"), invert=True)))
        rows.append(("connects/s through nginx", (cb.get("connects") or {}).get("per_s"),
                     (co.get("connects") or {}).get("per_s"),
                     _ratio((co.get("connects") or {}).get("per_s"), (cb.get("connects") or {}).get("per_s"))))
    rb, ro = base.get("capacity_rooms", {}), ours.get("capacity_rooms", {})
    if rb or ro:
        rows.append(("RSS per idle socket, one room per socket, KiB", rb.get("rss_per_socket_kib"),
                     ro.get("rss_per_socket_kib"),
                     _ratio(ro.get("rss_per_socket_kib"), rb.get("rss_per_socket_kib"), invert=True)))
        rows.append(("connects/s into rooms new to the worker (direct)", rb.get("connects_per_s"),
                     ro.get("connects_per_s"), _ratio(ro.get("connects_per_s"), rb.get("connects_per_s"))))
        rows.append(("ws CPU ms per connect into a new room", rb.get("cpu_ms_per_connect"),
                     ro.get("cpu_ms_per_connect"),
                     _ratio(ro.get("cpu_ms_per_connect"), rb.get("cpu_ms_per_connect"), invert=True)))
    return rows


def targets(results):
    """Each issue target with the measured value and met / not met."""
    base, ours = results["stacks"].get("baseline", {}), results["stacks"].get("ours", {})
    out = []
    ratios = [_ratio(_knee(ours, n).get("delivered_per_s"), _knee(base, n).get("delivered_per_s"))
              for n in results["scenarios"]]
    ratios = [r for r in ratios if r]
    best = min(ratios) if ratios else None
    out.append(("≥ 20× baseline loss-free delivered/s (every scenario)", best,
                bool(best and best >= TARGET_KNEE_RATIO)))
    fast = [r for res in ours.get("fanout", {}).values() for r in res.get("steps", [])
            if r["delivered_per_s"] >= TARGET_RATE and r["lost"] == 0 and r["p99_ms"] is not None]
    p99 = min((r["p99_ms"] for r in fast), default=None)
    out.append(("p99 ≤ 50 ms at ≥ 10,000 delivered/s, 0 loss", p99, bool(p99 is not None and p99 <= TARGET_P99_MS)))
    cap = ours.get("capacity") or {}
    if cap:
        out.append(("≥ 10,000 idle sockets per worker", cap.get("sockets_per_worker"),
                    (cap.get("sockets_per_worker") or 0) >= TARGET_IDLE))
        out.append(("≤ 20 KiB RSS per idle socket", cap.get("rss_per_socket_kib"),
                    cap.get("rss_per_socket_kib") is not None and cap["rss_per_socket_kib"] <= TARGET_RSS_KIB))
        cps = (cap.get("connects") or {}).get("per_s")
        out.append(("≥ 2,000 connects/s", cps, bool(cps and cps >= TARGET_CONNECTS)))
    rooms = ours.get("capacity_rooms") or {}
    if rooms:
        out.append(("≤ 20 KiB RSS per idle socket, one room per socket", rooms.get("rss_per_socket_kib"),
                    rooms.get("rss_per_socket_kib") is not None and rooms["rss_per_socket_kib"] <= TARGET_RSS_KIB))
    return out


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cpu_cols(row):
    cpu = row.get("cpu_pct", {})
    ws = "/".join(f"{v:.0f}" for k, v in sorted(cpu.items()) if k.startswith("ws"))
    client = sum(v for k, v in cpu.items() if k.startswith("client"))
    client_max = max((v for k, v in cpu.items() if k.startswith("client")), default=0)
    return ws, f"{cpu.get('redis', 0):.0f}", f"{cpu.get('nginx', 0):.0f}", f"{cpu.get('postgres', 0):.0f}", \
        f"{client:.0f} (max {client_max:.0f})"


def _shed(row):
    """Sockets the server closed: lost ones as {code: n}, resumed ones (?after=) after them."""
    resumed = ", ".join(f"{n} resumed after {code}" for code, n in (row.get("resumed_sockets") or {}).items())
    return " ".join(filter(None, [str(row["shed_sockets"]) if row["shed_sockets"] else "", resumed]))


def markdown(results):
    lines = [f"Run {results['meta']['started']} on {results['meta']['machine']}; mode `{results['meta']['mode']}`.", ""]
    cost = results["meta"].get("send_cost")
    if cost:
        lines += [f"One loopback `send()` costs its sender {cost['busy_us']} µs of CPU to a busy peer and "
                  f"{cost['sleeping_us']} µs to one sleeping in epoll (bench/wakecost.py): at low rates every hop "
                  "of a message wakes its peer, so CPU per delivery is far higher there, for every stack.", ""]
    lines += ["| metric | baseline | ours | ours ÷ baseline |", "| --- | ---: | ---: | ---: |"]
    for metric, b, o, r in summary(results):
        lines.append(f"| {metric} | {_fmt(b)} | {_fmt(o)} | {_fmt(r)}{'×' if r else ''} |")
    lines += ["", "Ratios are oriented so > 1 favours ours: p99 and RSS rows are baseline ÷ ours."]
    lines += ["", "| target | measured (ours) | met |", "| --- | ---: | :---: |"]
    for name, value, ok in targets(results):
        lines.append(f"| {name} | {_fmt(value)} | {'yes' if ok else '**no**'} |")
    lines += ["", "Every scenario and stack (deliveries per ws CPU-s: the server processes' own CPU, from the first "
              "send of the knee step to the end of its drain):", "", report_rooms.markdown(results)]
    idle = report_rooms.idle_markdown(results)
    if idle:
        lines += ["", idle]
    same = report_rooms.same_load_markdown(results)
    if same:
        lines += ["", same]
    tm = report_rooms.targets_markdown(results)
    if tm:
        lines += ["", tm]
    extra = [label for label in results["stacks"] if label not in ("baseline", "ours")]
    if extra:
        lines += ["", "Options measured in the same run (bench-only; not the product unless stated):", "",
                  "| stack | " + " | ".join(f"{n} knee/s" for n in results["scenarios"]) + " | ÷ baseline | ÷ ours |",
                  "| --- | " + " | ".join("---:" for _ in results["scenarios"]) + " | --- | --- |"]
        for label in ["ours"] + extra:
            st = results["stacks"].get(label, {})
            knees = [_knee(st, n).get("delivered_per_s") for n in results["scenarios"]]
            vs_base = [_ratio(k, _knee(results["stacks"].get("baseline", {}), n).get("delivered_per_s"))
                       for k, n in zip(knees, results["scenarios"])]
            vs_ours = [_ratio(k, _knee(results["stacks"].get("ours", {}), n).get("delivered_per_s"))
                       for k, n in zip(knees, results["scenarios"])]
            lines.append(f"| {label} | " + " | ".join(_fmt(k) for k in knees) + " | "
                         + ", ".join(f"{_fmt(r)}×" if r else "—" for r in vs_base) + " | "
                         + ", ".join(f"{_fmt(r)}×" if r else "—" for r in vs_ours) + " |")
    for name in results["scenarios"]:
        for label in results["stacks"]:
            res = results["stacks"].get(label, {}).get("fanout", {}).get(name)
            if not res:
                continue
            sc = res["scenario"]
            spans = res.get("rooms_spanning_workers")
            lines += ["", f"**{name}, {label}**: {sc['rooms']} room(s) × {sc['subs_per_room']} subscribers, "
                          f"{sc['pubs_per_room']} publisher socket(s)/room, {sc['duration']} s per step, "
                          f"{res.get('workers', 2)} ws workers; "
                          f"subscribers per worker {sorted(res['distribution'].values())}"
                          + (f"; rooms spanning 1, 2, … workers: {spans}" if spans and sc["rooms"] > 1 else "")
                          + ".", "",
                      "| offered/s | delivered/s | lost | refused | shed | p50 ms | p95 ms | p99 ms "
                      "| CPU% ws | per ws CPU-s | redis | nginx | postgres | clients | ok |",
                      "| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- "
                      "| :---: |"]
            for r in res["steps"]:
                ws, redis, nginx, pg, client = _cpu_cols(r)
                lines.append(f"| {_fmt(r['offered_per_s'])} | {_fmt(r['delivered_per_s'])} | {_fmt(r['lost'])} "
                             f"| {r['refused'] or ''} | {_shed(r)} | {_fmt(r['p50_ms'])} "
                             f"| {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | {ws} "
                             f"| {_fmt(r.get('deliveries_per_ws_cpu_s'))} | {redis} | {nginx} | {pg} "
                             f"| {client} | {'yes' if r['ok'] else 'no'}{' (refined)' if r.get('refined') else ''} |")
    for label in results["stacks"]:
        cap = results["stacks"].get(label, {}).get("capacity")
        if not cap:
            continue
        c = cap["connects"]
        lines += ["", f"**idle capacity, {label}**: {c['opened']}/{c['attempted']} connects through nginx in "
                      f"{c['seconds']} s = {_fmt(c['per_s'])}/s (concurrency {c['concurrency']}).", "",
                  "| worker | sockets held | RSS before MB | RSS after MB | KiB per socket | open s | failures |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for w in cap["idle"]:
            lines.append(f"| {w['worker']} | {_fmt(w['alive'])}/{_fmt(w['target'])} | {w['rss_before_mb']} "
                         f"| {w['rss_after_mb']} | {_fmt(w['rss_per_socket_kib'])} | {w['open_s']} "
                         f"| {w['failures'] or ''} |")
    for label in results["stacks"]:
        rooms = results["stacks"].get(label, {}).get("capacity_rooms")
        if not rooms:
            continue
        lines += ["", f"**idle sockets in small rooms, {label}**: every socket in a room of its own on its worker, "
                      f"each room with one socket on every worker, opened straight on the workers' ports: "
                      f"{rooms['opened']}/{rooms['attempted']} in {rooms['seconds']} s = "
                      f"{_fmt(rooms['connects_per_s'])}/s, each connect starting a Room (a Redis SUBSCRIBE "
                      f"and a Postgres read). {rooms['failures'] or ''}", "",
                  "| worker | sockets held | rooms | RSS before MB | RSS after MB | KiB per socket "
                  "| CPU ms per connect |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for w in rooms["idle"]:
            lines.append(f"| {w['worker']} | {_fmt(w['alive'])}/{_fmt(w['target'])} | {_fmt(w['rooms'])} "
                         f"| {w['rss_before_mb']} | {w['rss_after_mb']} | {_fmt(w['rss_per_socket_kib'])} "
                         f"| {_fmt(w['cpu_ms_per_connect'])} |")
    return "\n".join(lines) + "\n"


COLORS = {"baseline": "tab:red", "ours": "tab:blue", "socketio": "tab:green"}


def _latency_panel(ax, results, name):
    palette = iter(["tab:purple", "tab:orange", "tab:brown", "tab:olive"])
    for label in results["stacks"]:
        color = COLORS.get(label) or next(palette, "black")
        res = results["stacks"].get(label, {}).get("fanout", {}).get(name)
        if not res:
            continue
        pts = [r for r in res["steps"] if r["p99_ms"] is not None]
        x = [r["delivered_per_s"] for r in pts]
        ax.plot(x, [r["p99_ms"] for r in pts], "o-", color=color, label=f"{label} p99")
        ax.plot(x, [r["p50_ms"] for r in pts], "x--", color=color, alpha=0.6, label=f"{label} p50")
        for r in pts:
            if r["lost"]:
                ax.annotate("loss", (r["delivered_per_s"], r["p99_ms"]), fontsize=7, color=color)
    ax.axhline(250, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("delivered messages/s")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"fan-out {name}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)


def _cpu_panel(ax, results):
    """Deliveries per ws-worker CPU-second at each scenario's knee, one bar per stack."""
    rows = report_rooms.rows(results)
    names = [n for n in results["scenarios"] if any(r[0] == n for r in rows)]
    labels = list(results["stacks"])
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        vals = {n: r["per_ws_cpu_s"] or 0 for n, s, r in rows if s == label}
        ax.bar([j + i * width for j in range(len(names))], [vals.get(n, 0) for n in names], width,
               color=COLORS.get(label, "grey"), label=label)
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, fontsize=7, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("deliveries per ws CPU-second (log)")
    ax.set_title("server CPU cost at the knee (higher is better)", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results["scenarios"]
             if any(len((st.get("fanout", {}).get(n) or {}).get("steps", [])) > 1
                    for st in results["stacks"].values())]  # fixed-rate scenarios have no curve
    if not results["scenarios"]:
        return  # capacity-only run: nothing to plot
    panels = len(names) + 1
    cols = min(4, panels)
    rows_n = -(-panels // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.9 * rows_n), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names):
        _latency_panel(ax, results, name)
    _cpu_panel(flat[len(names)], results)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle("WebSocket fan-out on 2 cores, same run: ours vs the seed's tutorial baseline vs Socket.IO "
                 "(Socket.IO and baseline store nothing)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results, out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False))
    (out / "results.md").write_text(markdown(results))
    plot(results, out / "fanout.png")
    return out
