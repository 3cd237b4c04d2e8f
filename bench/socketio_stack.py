"""BENCH-ONLY PEER stack: Redis + N Node processes (Socket.IO 4, redis adapter) + nginx.

What a team runs when it picks Socket.IO instead of Channels, in the same
topology as the other stacks: its own Redis instance on a free port (pub/sub
channels ignore the database number, so a separate instance is the only clean
separation), `workers` Node processes of `bench/peers/socketio/server.js`, and
nginx in front with a plain round-robin upstream. Clients connect with the
websocket transport only, so no sticky sessions (ip_hash) are needed. It stores
nothing: the report says so next to its figures.

`ensure_installed()` runs `npm ci` from the pinned package-lock.json when the
lock changed since the last install (stamp in node_modules/), so it is cached
and idempotent; scripts/deps and the stack's `up()` both call it.
"""
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import procs
from bench.baseline_stack import NGINX_CONF

PEER_DIR = procs.REPO / "bench" / "peers" / "socketio"
STAMP = PEER_DIR / "node_modules" / ".bench-lock.sha256"


def ensure_installed(log=print):
    """`npm ci` (pinned by package-lock.json) unless node_modules already matches the lock."""
    want = hashlib.sha256((PEER_DIR / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return False
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("npm not found: the Socket.IO peer needs Node.js and npm (scripts/deps installs them)")
    log("socketio peer: npm ci (bench/peers/socketio/package-lock.json)")
    res = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER_DIR,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"npm ci failed in {PEER_DIR}:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    STAMP.write_text(want + "\n")
    return True


class SocketIOStack(procs.LoopbackURLs):
    """Same surface as BaselineStack: urls, server PIDs (the Node processes are ws1..wsN), up/down."""

    label = "Socket.IO 4 + redis-adapter (peer, no persistence)"
    dialect = "socketio"
    stores = False

    def __init__(self, workers=2):
        self.workers = workers
        self.state = Path(tempfile.mkdtemp(prefix="bench-socketio-"))
        self.redis_port = procs.free_port()
        self.ws_ports = [procs.free_port() for _ in range(workers)]
        self.http_port = procs.free_port()
        self._procs = {}

    @property
    def ws_worker_urls(self):
        return [f"ws://127.0.0.1:{p}" for p in self.ws_ports]

    def up(self):
        ensure_installed()
        procs.raise_nofile()
        log = self.state / "redis.log"
        self._procs[("redis", 0)] = procs.spawn(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.state)], log)
        procs.wait_port(self.redis_port, self._procs[("redis", 0)], log=log)
        node = shutil.which("node") or "node"
        for i, port in enumerate(self.ws_ports, 1):
            env = procs.clean_env(PORT=port, REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
                                  NODE_ENV="production")
            self._procs[("ws", i)] = procs.spawn([node, str(PEER_DIR / "server.js")], self.state / f"ws{i}.log",
                                                 env=env, cwd=PEER_DIR)
        for i, port in enumerate(self.ws_ports, 1):
            procs.wait_port(port, self._procs[("ws", i)], log=self.state / f"ws{i}.log")
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.ws_ports)
        conf = self.state / "nginx.conf"
        conf.write_text(NGINX_CONF.format(state=self.state, servers=servers, port=self.http_port,
                                          location="/socket.io/"))
        log = self.state / "nginx.log"
        self._procs[("nginx", 0)] = procs.spawn(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(self.state),
             "-e", str(self.state / "nginx-error.log")], log)
        procs.wait_port(self.http_port, self._procs[("nginx", 0)], log=self.state / "nginx-error.log")
        return self

    def server_pids(self):
        """{name: pid} of every server process whose CPU the bench reports (ws<i> = Node process i)."""
        out = {"redis": self._procs[("redis", 0)].pid, "nginx": self._procs[("nginx", 0)].pid}
        for i in range(1, self.workers + 1):
            out[f"ws{i}"] = self._procs[("ws", i)].pid
        return out

    def down(self):
        for key in list(self._procs)[::-1]:
            procs.stop(self._procs.pop(key))
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
