"""NativeStack: the whole topology as real processes on loopback, for tests.

Every suite (integration, browser, k8s truth test, faults, bench) starts its
stack through this one helper so they all exercise the same runner operators
use (`scripts/local`), not a test-only copy of it.

    with NativeStack(workers=2) as stack:          # or stack = NativeStack(); stack.up()
        stack.http_url          # "http://127.0.0.1:PORT"   nginx, the public entry
        stack.ws_base           # "ws://127.0.0.1:PORT"     nginx, for /ws/chat/<room>/
        stack.web_url           # "http://127.0.0.1:PORT"   gunicorn directly
        stack.ws_worker_urls    # ["ws://127.0.0.1:PORT", ...] each daphne worker directly
        stack.https_url         # "https://localhost:PORT"  nginx's TLS listener (tls=... only)
        stack.wss_base          # "wss://localhost:PORT"
        stack.settings          # env dict the servers run with: secrets, POSTGRES_PORT, REDIS_PORT, ...
        stack.pid("web"); stack.pid("ws", 2)     # PID of a tier (ws: worker i, 1-based)
        stack.log_path("nginx"); stack.log_path("ws", 1)
        stack.metrics_port("ws", 1); stack.metrics_port("prometheus")  # up("...", "monitoring")
        stack.stop("redis"); stack.start("redis")  # tiers: db redis web ws nginx; ws-<i> for one worker
        stack.reload_nginx()
        stack.manage("createsuperuser", "--noinput")  # manage.py with the stack's env
    # leaving the block (or stack.down()) stops exactly what was started and
    # removes the temp state dir.

TLS: `NativeStack(tls={"TLS_MODE": "files", "TLS_CERT_DIR": dir})` (or
"acme" with ACME_* settings) runs nginx with TLS as an operator would set it
in .env; see tests/tls.py for the test CA and clients that trust it.

Ports are picked free at construction, all below the kernel's ephemeral range
(bench.procs.free_run: a port an outgoing connection may take between picking
and binding would fail the start; a clash is still retried); the temp state dir keeps
several stacks (and other engineers' servers) from colliding. `up(*tiers)`
starts only some tiers ("db", "redis"), like `scripts/local up db redis`.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from bench.procs import free_port, free_run  # noqa: F401  (free_port: for other tests' own servers)

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "scripts" / "local"

# Inherited values that would tie this stack to another one (the unit-test
# backing services, a developer's .env secrets): every stack gets its own.
_NOT_INHERITED = (
    "DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "DATABASE_URL", "REDIS_URL",
    "POSTGRES_HOST", "POSTGRES_PORT", "REDIS_HOST", "REDIS_PORT", "LOCAL_STATE_DIR",
    "LOCAL_PG_PORT", "LOCAL_REDIS_PORT", "LOCAL_WEB_PORT", "LOCAL_WS_BASE_PORT", "HTTP_PORT",
    "WS_WORKERS", "PORT", "HTTPS_PORT", "TLS_MODE", "TLS_CERT_DIR", "TLS_CERT_FILE", "TLS_KEY_FILE",
    "DJANGO_TLS", "ACME_SERVER", "ACME_DOMAINS", "ACME_EMAIL", "ACME_CA_BUNDLE",
    "LOCAL_METRICS_BASE_PORT", "WS_METRICS_PORT", "WEB_METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR",
    "LOCAL_REDIS_TOPOLOGY",
)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def alive(pid: int) -> bool:
    """True while the process runs; a zombie counts as dead (init may reap late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class StackError(RuntimeError):
    """scripts/local failed; the message carries its output (log tails included)."""


class NativeStack:
    """One native stack (see the module docstring for the API)."""

    def __init__(self, workers: int = 2, env: dict[str, str] | None = None,
                 state_dir: str | os.PathLike | None = None, timeout: float = 300,
                 tls: dict[str, str] | None = None, spare_workers: int = 0):
        self.workers = workers
        self.tls = dict(tls or {})
        self.spare_workers = spare_workers  # ports kept free for add_ws_worker()
        self.timeout = timeout
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="chat-stack-"))
        self._extra_env = dict(env or {})
        self._pick_ports()
        self.settings: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------
    def _pick_ports(self) -> None:
        self.ports = {
            "HTTP_PORT": free_port(),
            "HTTPS_PORT": free_port(),
            "LOCAL_WEB_PORT": free_port(),
            "LOCAL_PG_PORT": free_port(),
            # +1..+4 too: the sentinel and sharded topologies (scripts/local-redis).
            "LOCAL_REDIS_PORT": free_run(5) + 1,
            "LOCAL_WS_BASE_PORT": free_run(self.workers + self.spare_workers),
            # scripts/local puts every metrics port at an offset of this base, +0 to +10+N for
            # N workers, the spare ones included: 11+N ports (the run once held 10+workers, and
            # a scaled-out ws-3 found its metrics port taken: `Address already in use`).
            "LOCAL_METRICS_BASE_PORT": free_run(11 + self.workers + self.spare_workers) + 1,
        }

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env.update({k: str(v) for k, v in self.ports.items()})
        env["LOCAL_STATE_DIR"] = str(self.state_dir)
        env["WS_WORKERS"] = str(self.workers)
        env.update(self.tls)
        env.update(self._extra_env)
        return env

    def run_local(self, *args: str, check: bool = True, timeout: float | None = None,
                  env: dict[str, str] | None = None) -> str:
        """Run scripts/local with this stack's settings (plus `env`); return its output."""
        proc = subprocess.run(
            [str(LOCAL), *args], env={**self._env(), **(env or {})}, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout or self.timeout, stdin=subprocess.DEVNULL,
        )
        out = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise StackError(f"scripts/local {' '.join(args)} exited {proc.returncode}:\n{out}")
        return out

    def up(self, *tiers: str) -> "NativeStack":
        """Start the tiers (all when none given) and wait until they are healthy."""
        for attempt in range(3):
            try:
                self.run_local("up", *tiers)
                break
            except StackError as exc:
                # Another process grabbed a port between picking and binding: fresh ports.
                if "already in use" not in str(exc) or attempt == 2:
                    raise
                self.run_local("down", check=False)
                self._set_logs_aside(attempt + 1)
                self._pick_ports()
        self.settings = self._read_settings()
        return self

    def _set_logs_aside(self, attempt: int) -> None:
        """Keep a failed attempt's logs apart from the stack that runs: tests read the
        live logs for crashes, and the Postgres stopped after a port clash logs its
        background workers exiting."""
        logs = self.state_dir / "log"
        if logs.exists():
            logs.rename(self.state_dir / f"log.failed-attempt-{attempt}")

    def _read_settings(self) -> dict[str, str]:
        out = self.run_local("env")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def down(self) -> None:
        """Stop exactly what this stack started, then drop its state dir."""
        try:
            self.run_local("down", check=False)
        finally:
            if self._own_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "NativeStack":
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()

    # --- addresses -------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['HTTP_PORT']}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.ports['HTTP_PORT']}"

    @property
    def https_url(self) -> str:
        # localhost, not 127.0.0.1: the name the dev and ACME certificates carry.
        return f"https://localhost:{self.ports['HTTPS_PORT']}"

    @property
    def wss_base(self) -> str:
        return f"wss://localhost:{self.ports['HTTPS_PORT']}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['LOCAL_WEB_PORT']}"

    def metrics_port(self, what: str, i: int | None = None) -> int:
        """Loopback port of a metrics endpoint (the offsets of .env.example, LOCAL_METRICS_BASE_PORT):
        prometheus, web, nginx-status, nginx-exporter, redis-exporter, postgres-exporter, ws (i: 1-based)."""
        base = self.ports["LOCAL_METRICS_BASE_PORT"]
        if what == "ws":
            return base + 10 + i
        return base + ("prometheus", "web", "nginx-status", "nginx-exporter", "redis-exporter",
                       "postgres-exporter").index(what)

    @property
    def ws_worker_urls(self) -> list[str]:
        base = self.ports["LOCAL_WS_BASE_PORT"]
        return [f"ws://127.0.0.1:{base + i}" for i in range(1, self.workers + 1)]

    # --- tiers -----------------------------------------------------------------
    @staticmethod
    def _name(tier: str, i: int | None) -> str:
        return f"{tier}-{i}" if i is not None else tier

    def pid(self, tier: str, i: int | None = None) -> int | None:
        """PID of a running tier (ws: pass the 1-based worker index), None when stopped."""
        path = self.state_dir / "run" / f"{self._name(tier, i)}.pid"
        try:
            pid = int(path.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if alive(pid) else None

    def log_path(self, tier: str, i: int | None = None) -> Path:
        return self.state_dir / "log" / f"{self._name(tier, i)}.log"

    def stop(self, tier: str) -> None:
        """Stop a tier the way operators do (SIGTERM, deadline, SIGKILL; pg_ctl for db)."""
        self.run_local("stop", tier)

    def start(self, tier: str) -> None:
        """Start a tier again and wait until it is healthy."""
        self.run_local("start", tier)

    def reload_nginx(self) -> None:
        self.run_local("reload-nginx")

    def add_ws_worker(self) -> int:
        """Scale out natively: start worker N+1 (waits for its /readyz), then put it in
        nginx's upstream (reload). Returns its 1-based index."""
        self.workers += 1
        index = self.workers
        port = self.ports["LOCAL_WS_BASE_PORT"] + index
        if not _port_free(port):
            self.workers -= 1
            raise StackError(f"cannot add ws-{index}: 127.0.0.1:{port} is in use")
        self.start(f"ws-{index}")
        self.reload_nginx()
        return index

    def manage(self, *args: str, input: str | None = None, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `manage.py ARGS` against this stack's database and Redis."""
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "manage.py", *args],
            cwd=ROOT / "django_app",
            env={**{k: v for k, v in os.environ.items() if k not in _NOT_INHERITED},
                 **self.settings, **(env or {})},
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and proc.returncode != 0:
            raise StackError(f"manage.py {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}{proc.stderr}")
        return proc
