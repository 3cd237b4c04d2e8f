"""Load-generator processes: subscribers and publishers, each its own OS process.

One asyncio loop per process (uvloop when installed) talking to the controller
over a multiprocessing Pipe. Keeping the client out of the controller's
process, and several of them, is what lets the report show the client's CPU
separately and prove it is not the bottleneck.

Message text carries `B<step>|<room>|<seq>|<send time ns>`: the subscriber
bins each delivery by step and measures latency from the same clock (one host,
CLOCK_REALTIME), so no server field is trusted for timing.
"""
import asyncio
import math
import multiprocessing as mp
import random
import time
from array import array
from collections import Counter, defaultdict

import websockets
from websockets.asyncio.client import connect

from bench.dialects import DIALECTS, Chat

try:
    import orjson as _json

    loads = _json.loads

    def dumps(obj):
        return _json.dumps(obj).decode()
except ImportError:  # pragma: no cover - orjson is in requirements-dev
    import json as _json

    loads, dumps = _json.loads, _json.dumps

ORIGIN = "http://127.0.0.1"
MARK = "B"
CONNECT_TIMEOUT = 10.0


def _run(coro_factory, conn):
    try:
        import uvloop

        uvloop.run(coro_factory(conn))
    except ImportError:  # pragma: no cover
        asyncio.run(coro_factory(conn))


async def _open(url, origin=ORIGIN, dialect=Chat):
    """Connect and read the welcome frame; returns (ws, worker id or None)."""
    ws = await asyncio.wait_for(
        connect(url, origin=origin, compression=None, max_queue=None, open_timeout=CONNECT_TIMEOUT, proxy=None,
                ping_interval=None, close_timeout=2),
        CONNECT_TIMEOUT)
    try:
        worker = await asyncio.wait_for(dialect.hello(ws, ws.recv), CONNECT_TIMEOUT)
    except BaseException:
        await ws.close()
        raise
    return ws, worker


def _failure(exc):
    """A connect failure's key in the report: the HTTP status when the handshake got one."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


class _Cmd:
    """Reads controller commands without blocking the event loop."""

    def __init__(self, conn):
        self.conn = conn

    async def next(self):
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    def reply(self, obj):
        self.conn.send(obj)


# --------------------------------------------------------------------- subscribers
async def _over_quota_pause(attempt):
    """Wait before connecting again a socket that landed on a worker already at its quota.

    Through nginx, the product's admission sends new sockets to the worker below
    the fleet mean by its census, up to a second old: during a burst of connects
    every one of them lands on that worker until the census moves. Retried at
    once, all of a socket's attempts land there too, and the last one is kept
    (publishers) or given up (subscribers). Real members of a room do not all
    arrive in the same second."""
    await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))


class Subscribers:
    """Holds subscriber sockets; bins every delivery by the step tag in its text."""

    RESUME_CODES = (1012, 1013)  # restart or rebalance; try again later

    def __init__(self):
        self.dialect = Chat
        self.socks = defaultdict(list)  # room -> [(ws, worker, task)]
        self.count = Counter()  # step -> deliveries
        self.lat = defaultdict(lambda: array("q"))  # step -> latency in us
        self.closed = Counter()  # close code -> sockets lost
        self.resumed = Counter()  # close code -> sockets that resumed after it
        self.other = 0  # frames that were not bench messages (errors, history)
        self.stopping = False

    def _count(self, text, now):
        step, _room, _seq, sent = text[1:].split("|", 4)[:4]
        self.count[step] += 1
        self.lat[step].append((now - int(sent)) // 1000)

    async def _reader(self, room, ws, url):
        pong, delivery = self.dialect.pong, self.dialect.delivery
        last_id = getattr(ws, "bench_position", None)
        while True:
            try:
                async for raw in ws:
                    now = time.time_ns()
                    text, msg_id = delivery(raw)
                    if msg_id is not None:
                        last_id = msg_id
                    if not text or text[0] != MARK:
                        if pong and raw == self.dialect.ping:
                            await ws.send(pong)
                        self.other += 1
                        continue
                    self._count(text, now)
            except websockets.ConnectionClosed:
                pass
            code = ws.close_code if ws.close_code is not None else 1006
            new = None
            if not self.stopping and self.dialect.resumes and code in self.RESUME_CODES and last_id is not None:
                new = await self._resume(room, url, last_id, code)
                if new is not None and self.stopping:  # close_all() ran meanwhile
                    await new[0].close()
                    new = None
            if new is None:
                self.closed[code] += 1
                self.socks[room] = [s for s in self.socks[room] if s[0] is not ws]
                return
            self.resumed[code] += 1
            task = asyncio.current_task()
            self.socks[room] = [(new[0], new[1], task) if s[0] is ws else s for s in self.socks[room]]
            ws, last_id = new[0], new[0].bench_position

    async def _resume(self, room, url, after, code):
        """Reconnect with ?after=, count what was missed (the welcome's history); (ws, worker) or None."""
        for attempt in range(8):
            # 1013 asks for a backoff (the product's retry hint is 2 s); 1012 for none.
            await asyncio.sleep(2.0 if code == 1013 else min(2.0, 0.05 * attempt))
            if self.stopping:
                return None
            try:
                ws, worker = await _open(url + self.dialect.path(room, after), dialect=self.dialect)
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed):
                continue
            now = time.time_ns()
            for text in getattr(ws, "bench_history", None) or ():
                if text and text[0] == MARK:
                    self._count(text, now)
            ws.bench_history = None
            return ws, worker
        return None

    async def ensure(self, urls, rooms, workers, concurrency=64, deadline_s=60.0, balance="room"):
        """Top each room up to its target.

        balance="room": at most ceil(k/workers) per worker per room. Through
        nginx the balancer picks the worker, so a socket landing on a worker
        already at quota is closed and retried (bounded attempts).
        balance="nginx": sockets connect in random order, as members of many
        small rooms would, and only the worker totals are kept even (a
        round-robin balancer's result while no worker fails): a room spans
        one worker or several by chance.
        """
        sem = asyncio.Semaphore(concurrency)
        deadline = time.monotonic() + deadline_s
        failures = Counter()
        rr = [0]

        async def one(room, quota, per_worker):
            async with sem:
                for attempt in range(12):
                    if time.monotonic() > deadline:
                        failures["deadline"] += 1
                        return
                    url = urls[rr[0] % len(urls)]
                    rr[0] += 1
                    try:
                        ws, worker = await _open(url + self.dialect.path(room), dialect=self.dialect)
                    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                            websockets.ConnectionClosed) as exc:
                        failures[_failure(exc)] += 1
                        # back off: nginx marks a worker failed for fail_timeout after one
                        # error and answers 502 at once when none is left, so a tight
                        # retry loop would burn every attempt in a few milliseconds
                        await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))
                        continue
                    if per_worker[worker] >= quota:
                        await ws.close()
                        if balance != "room":
                            await _over_quota_pause(attempt)
                        continue
                    per_worker[worker] += 1
                    task = asyncio.create_task(self._reader(room, ws, url))
                    self.socks[room].append((ws, worker, task))
                    return
                failures["unbalanced"] += 1

        jobs = []
        overall = Counter(w for socks in self.socks.values() for _ws, w, _t in socks)
        # 2 % + 1 of slack: round robin alternates workers, so with several connects
        # in flight an exact quota can send one socket to the full worker every time
        overall_quota = math.ceil(sum(rooms.values()) / max(1, workers) * 1.02) + 1
        for room, k in rooms.items():
            if balance == "room":
                quota, per_worker = math.ceil(k / max(1, workers)), Counter(w for _ws, w, _t in self.socks[room])
            else:
                quota, per_worker = overall_quota, overall
            for _ in range(k - len(self.socks[room])):
                jobs.append((room, quota, per_worker))
        if balance != "room":
            random.shuffle(jobs)
        await asyncio.gather(*(one(*job) for job in jobs))
        dist = Counter(w for socks in self.socks.values() for _ws, w, _t in socks)
        spans = {room: sorted({w for _ws, w, _t in socks}) for room, socks in self.socks.items()}
        return {"workers": dict(dist), "alive": sum(dist.values()), "failures": dict(failures), "spans": spans}

    async def close_all(self):
        self.stopping = True
        socks = [s for lst in self.socks.values() for s in lst]
        await asyncio.gather(*(ws.close() for ws, _w, _t in socks), return_exceptions=True)
        await asyncio.gather(*(t for _ws, _w, t in socks), return_exceptions=True)
        self.socks.clear()
        self.stopping = False

    def collect(self, step):
        step = str(step)
        lat = self.lat.pop(step, array("q"))
        return {"received": self.count.pop(step, 0), "lat_us": lat.tobytes(),
                "closed": dict(self.closed), "resumed": dict(self.resumed), "other": self.other,
                "alive": sum(len(v) for v in self.socks.values())}


async def _subscriber_main(conn):
    cmd, subs = _Cmd(conn), Subscribers()
    while True:
        msg = await cmd.next()
        op = msg["op"]
        if op == "ensure":
            subs.dialect = DIALECTS[msg.get("dialect", "chat")]
            cmd.reply(await subs.ensure(msg["urls"], msg["rooms"], msg["workers"], balance=msg.get("balance", "room"),
                                        deadline_s=msg.get("deadline_s", 60.0)))
        elif op == "count":
            cmd.reply(subs.count.get(str(msg["step"]), 0))
        elif op == "collect":
            cmd.reply(subs.collect(msg["step"]))
        elif op == "close_all":
            await subs.close_all()
            cmd.reply(True)
        elif op == "exit":
            await subs.close_all()
            cmd.reply(True)
            return


# ---------------------------------------------------------------------- publishers
class Publishers:
    """Publisher sockets sending at a fixed rate; counts the server's refusals."""

    def __init__(self):
        self.dialect = Chat
        self.socks = []  # [(room, ws)]
        self.errors = Counter()  # error code -> n
        self.tasks = []

    async def _drain(self, ws):
        """Read (and drop) the echo of our own messages so TCP never backs up."""
        ping, pong = getattr(self.dialect, "ping", None), self.dialect.pong
        try:
            async for raw in ws:
                if pong and raw == ping:
                    await ws.send(pong)
                elif '"chat.error"' in raw:
                    try:
                        self.errors[loads(raw).get("code", "?")] += 1
                    except ValueError:
                        self.errors["?"] += 1
        except websockets.ConnectionClosed:
            self.errors[f"closed:{ws.close_code}"] += 1

    async def connect(self, url, rooms, per_room, n_workers=1, balance="room"):
        """Publisher sockets spread evenly over the workers (retry while unbalanced, bounded).

        balance="nginx": 32 connects in flight, worker totals kept even.
        """
        workers = Counter()
        if balance != "room":
            sem = asyncio.Semaphore(32)
            quota = math.ceil(len(rooms) * per_room / max(1, n_workers) * 1.02) + 1  # slack: see ensure()

            async def one(room):
                async with sem:
                    for attempt in range(12):
                        try:
                            ws, worker = await _open(url + self.dialect.path(room), dialect=self.dialect)
                        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
                                websockets.ConnectionClosed):
                            if attempt == 11:
                                raise
                            await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))  # see Subscribers.ensure
                            continue
                        if workers[worker] < quota or attempt == 11:
                            workers[worker] += 1
                            break
                        await ws.close()
                        await _over_quota_pause(attempt)
                self.socks.append((room, ws))
                self.tasks.append(asyncio.create_task(self._drain(ws)))

            await asyncio.gather(*(one(room) for room in rooms for _ in range(per_room)))
            order = {room: i for i, room in enumerate(rooms)}
            self.socks.sort(key=lambda s: order[s[0]])  # round robin over rooms when sending
            return dict(workers)
        for room in rooms:
            for _ in range(per_room):
                quota = math.ceil((sum(workers.values()) + 1) / max(1, n_workers))
                for attempt in range(8):
                    ws, worker = await _open(url + self.dialect.path(room), dialect=self.dialect)
                    if workers[worker] < quota or attempt == 7:
                        break
                    await ws.close()
                workers[worker] += 1
                self.socks.append((room, ws))
                self.tasks.append(asyncio.create_task(self._drain(ws)))
        return dict(workers)

    async def run(self, step, rate, duration, pad=""):
        """Send round(rate*duration) messages evenly spaced; never more, never longer than 3x."""
        loop = asyncio.get_running_loop()
        total = max(1, round(rate * duration))
        sent = Counter()
        live = [(room, ws) for room, ws in self.socks if ws.close_code is None]
        if not live:
            return {"sent": {}, "elapsed": 0.0, "errors": dict(self.errors)}
        t0 = loop.time()
        hard_stop = t0 + 3 * duration + 5
        encode = self.dialect.encode
        i = 0
        while i < total and loop.time() < hard_stop:
            due = min(total, int((loop.time() - t0) * rate) + 1)
            while i < due:
                room, ws = live[i % len(live)]
                text = f"{MARK}{step}|{room}|{i}|{time.time_ns()}{pad}"
                try:
                    await ws.send(encode(text))
                    sent[room] += 1
                except websockets.ConnectionClosed:
                    self.errors["send_closed"] += 1
                i += 1
            wait = t0 + i / rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        return {"sent": dict(sent), "elapsed": loop.time() - t0, "errors": dict(self.errors)}

    async def close_all(self):
        await asyncio.gather(*(ws.close() for _r, ws in self.socks), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.socks, self.tasks = [], []


async def _publisher_main(conn):
    cmd, pubs = _Cmd(conn), Publishers()
    while True:
        msg = await cmd.next()
        op = msg["op"]
        if op == "connect":
            pubs.dialect = DIALECTS[msg.get("dialect", "chat")]
            cmd.reply(await pubs.connect(msg["url"], msg["rooms"], msg["per_room"], msg.get("n_workers", 1),
                                         balance=msg.get("balance", "room")))
        elif op == "run":
            cmd.reply(await pubs.run(msg["step"], msg["rate"], msg["duration"], msg.get("pad", "")))
        elif op == "errors":
            cmd.reply(dict(pubs.errors))
        elif op in ("close_all", "exit"):
            await pubs.close_all()
            cmd.reply(True)
            if op == "exit":
                return


ROLES = {"sub": _subscriber_main, "pub": _publisher_main}


def _entry(role, conn):
    from bench.procs import raise_nofile

    raise_nofile()
    if role == "idle":
        from bench.idle_client import idle_main  # imports this module: resolved here, not at import time

        _run(idle_main, conn)
    else:
        _run(ROLES[role], conn)


class Proc:
    """Controller-side handle of one client process (spawned: no inherited loop state)."""

    def __init__(self, role):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.role = role
        self.proc = ctx.Process(target=_entry, args=(role, child), daemon=True, name=f"bench-{role}")
        self.proc.start()

    @property
    def pid(self):
        return self.proc.pid

    def send(self, **msg):
        self.conn.send(msg)

    def recv(self, timeout=120.0):
        if not self.conn.poll(timeout):
            raise TimeoutError(f"bench {self.role} process {self.pid} did not answer in {timeout}s")
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"bench {self.role} process {self.pid} died "
                               f"(exit code {self.proc.exitcode}); see its traceback above") from exc

    def call(self, timeout=120.0, **msg):
        self.send(**msg)
        return self.recv(timeout)

    def close(self):
        try:
            if self.proc.is_alive():
                self.call(timeout=15, op="exit")
        except (TimeoutError, OSError, EOFError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def pids_of(procs):
    return {f"client-{p.role}{i}": p.pid for i, p in enumerate(procs)}

