"""Open N chat sockets through nginx, run a stop command, and report what the clients saw.

Why: `make down` must drain (issue 17): every client gets close code 1012
("restarting, reconnect") and the command returns within WS_DRAIN_SECONDS + 5 s.
The compose suite runs this with a small N on its own stack; the 1,000-socket
figure of the issue is measured by hand with the same code:

    .venv/bin/python -m tests.compose.downtime --port 8080 --sockets 1000 -- scripts/compose down

(the stack's NGINX_MAX_CONN_PER_IP must allow that many sockets from one address).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


@dataclass
class Outcome:
    sockets: int
    open_seconds: float
    stop_seconds: float
    stop_returncode: int
    close_codes: dict  # close code (1006: abnormal, no close frame) -> count
    stop_stderr: str = ""

    def lines(self) -> list[str]:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.close_codes.items(), key=str))
        return [f"{self.sockets} sockets opened in {self.open_seconds:.1f} s",
                f"stop command exited {self.stop_returncode} after {self.stop_seconds:.1f} s",
                f"close codes seen by the clients: {codes}"]


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed + 256), hard))


async def _open(url: str, timeout: float):
    ws = await asyncio.wait_for(connect(url, open_timeout=timeout, max_queue=None), timeout)
    frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    assert frame.get("type") == "chat.welcome", frame
    return ws


async def _close_code(ws, deadline: float):
    """Read until the server closes: its close code (1006: no close frame, an abnormal close)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
    except ConnectionClosed:
        return ws.close_code
    except asyncio.TimeoutError:
        await ws.close()
        return "still open"


async def measure(url: str, sockets: int, stop_cmd: list[str], *, env=None, cwd=None,
                  open_concurrency: int = 50, stop_timeout: float = 120) -> Outcome:
    """Open `sockets` sockets at `url`, run `stop_cmd` in a thread (the loop keeps
    answering close frames meanwhile), then collect every socket's close code."""
    _raise_fd_limit(sockets)
    gate = asyncio.Semaphore(open_concurrency)

    async def one():
        async with gate:
            return await _open(url, 15)

    t0 = time.monotonic()
    conns = await asyncio.gather(*(one() for _ in range(sockets)))
    opened = time.monotonic() - t0

    codes = [asyncio.ensure_future(_close_code(ws, time.monotonic() + stop_timeout)) for ws in conns]
    t1 = time.monotonic()
    proc = await asyncio.to_thread(subprocess.run, stop_cmd, env=env, cwd=cwd, capture_output=True,
                                   text=True, timeout=stop_timeout)
    took = time.monotonic() - t1
    seen = collections.Counter(await asyncio.gather(*codes))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(stop_cmd)} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return Outcome(sockets, opened, took, proc.returncode, dict(seen), proc.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="nginx's published port (HTTP_PORT)")
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--room", default="downtime")
    ap.add_argument("stop_cmd", nargs="+", help="the command that stops the stack, e.g. scripts/compose down")
    args = ap.parse_args()
    url = f"ws://127.0.0.1:{args.port}/ws/chat/{args.room}/"
    outcome = asyncio.run(measure(url, args.sockets, args.stop_cmd))
    print(outcome.stop_stderr[-3000:], file=sys.stderr)
    print("\n".join(outcome.lines()))


if __name__ == "__main__":
    main()
