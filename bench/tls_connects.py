"""`make bench-tls`: WebSocket connects per second through nginx, wss:// vs ws://,
in one run on one native stack (2 ws workers).

A "connect" is what a (re)connecting browser costs: TCP, for wss:// a full TLS
handshake (no session resumption: nginx has tickets off and each client
connection is new), the HTTP/1.1 Upgrade through nginx, the chat.welcome frame
from a daphne worker, and the close. CONCURRENCY clients loop for SECONDS:
first with TLS_MODE=files (wss:// on HTTPS_PORT), then the same nginx reloaded
with TLS_MODE=off (ws:// on HTTP_PORT), so the app tiers are identical.
Besides connects/s it reports nginx's CPU (workers' user+system time from
/proc) per connect: the server-side price of the handshake, independent of the
Python client, which shares the machine's cores and is usually the limit.

    python -m bench.tls_connects [--seconds 10] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from websockets.exceptions import InvalidState
from websockets.uri import parse_uri

from bench.client import _Handshake
from tests.stack import NativeStack
from tests.tls import client_context, make_certs

TICKS = os.sysconf("SC_CLK_TCK")


def nginx_cpu_seconds(master: int) -> float:
    """user+system seconds of nginx's worker processes (children of the master)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


async def hammer(url: str, ssl_ctx, seconds: float, concurrency: int) -> tuple[int, int]:
    ok = failed = 0
    deadline = time.monotonic() + seconds

    uri, loop = parse_uri(url), asyncio.get_running_loop()
    tls = {"ssl": ssl_ctx, "server_hostname": uri.host} if ssl_ctx else {}

    async def one_client():
        # bench/client.py's sans-I/O handshake (the light client of `make bench`), over TLS or not.
        nonlocal ok, failed
        while time.monotonic() < deadline:
            done = loop.create_future()
            proto = None
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _Handshake(url, done), uri.host, uri.port, **tls), 10)
                await asyncio.wait_for(done, 10)  # 101 checked, chat.welcome parsed
                ok += 1
            except Exception:  # noqa: BLE001 - counted, the run goes on
                failed += 1
            finally:
                if proto is not None:
                    try:
                        proto.close()  # close frame, then the TCP/TLS connection
                    except InvalidState:  # the handshake never finished
                        proto.transport.close()

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return ok, failed


def measure(stack: NativeStack, url: str, ssl_ctx, seconds: float, concurrency: int) -> dict:
    asyncio.run(hammer(url, ssl_ctx, 1.0, concurrency))  # warm-up: workers, pools, caches
    master = stack.pid("nginx")
    cpu0, t0 = nginx_cpu_seconds(master), time.monotonic()
    ok, failed = asyncio.run(hammer(url, ssl_ctx, seconds, concurrency))
    elapsed, cpu = time.monotonic() - t0, nginx_cpu_seconds(master) - cpu0
    return {"connects": ok, "failed": failed, "per_s": ok / elapsed,
            "nginx_cpu_ms_per_connect": 1000 * cpu / ok if ok else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        certs = make_certs(Path(tmp))
        ctx = client_context(certs.ca_cert)
        with NativeStack(workers=2, tls={"TLS_MODE": "files", "TLS_CERT_DIR": str(certs.dir)}) as stack:
            room = "bench-tls"
            wss = measure(stack, f"{stack.wss_base}/ws/chat/{room}/", ctx, args.seconds, args.concurrency)
            stack.tls = {"TLS_MODE": "off"}
            stack.reload_nginx()  # same nginx master, same app tiers, TLS off
            ws = measure(stack, f"{stack.ws_base}/ws/chat/{room}/", None, args.seconds, args.concurrency)

    rows = [("wss:// (TLS 1.3, full handshake)", wss), ("ws://", ws)]
    lines = [f"connects through nginx, {args.concurrency} concurrent clients, {args.seconds:.0f} s each, "
             f"{os.cpu_count()} cores shared by client, nginx, daphne x2",
             "", "| scheme | connects/s | failed | nginx CPU per connect |", "| --- | ---: | ---: | ---: |"]
    for name, r in rows:
        lines.append(f"| {name} | {r['per_s']:.0f} | {r['failed']} | {r['nginx_cpu_ms_per_connect']:.2f} ms |")
    lines.append("")
    lines.append(f"wss:// / ws:// = {wss['per_s'] / ws['per_s']:.2f}")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "latest"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tls-connects.md").write_text(text + "\n")
    return 0 if wss["connects"] and ws["connects"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
