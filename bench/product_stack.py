"""The product stack under test, started through the native runner (scripts/local).

The runner is the same code path `make local` uses; the bench only moves it to
free ports and a temp state dir, and lifts the per-connection rate limit and the
per-IP connection cap, which would otherwise (correctly) refuse a load generator
that sends thousands of messages from one IP. Every override is listed in
OVERRIDES and copied into the report.
"""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import procs

# Settings from .env.example that the bench changes, and why (reported verbatim).
OVERRIDES = {
    "CHAT_RATE_PER_SEC": "1000000",  # publishers send far above a human's 5/s
    "CHAT_RATE_BURST": "1000000",
    "CHAT_RATE_MAX_VIOLATIONS": "1000000",
    "NGINX_MAX_CONN_PER_IP": "60000",  # every bench socket comes from 127.0.0.1
    "LOG_LEVEL": "WARNING",  # a log line per message would measure the logger
    "DEBUG": "false",
}


def _read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class ProductStack(procs.LoopbackURLs):
    """Same surface as BaselineStack: urls, server PIDs, up/down."""

    label = "ours (product)"
    dialect = "chat"
    stores = True  # persists every message: the bench reports Postgres transactions per stored message

    def __init__(self, workers=2, extra_env=None):
        self.workers = workers
        self.state = Path(tempfile.mkdtemp(prefix="bench-product-"))
        os.chmod(self.state, 0o755)
        self.http_port = procs.free_port()
        self.ws_base_port = procs.free_run(workers)
        self.env = procs.clean_env(
            LOCAL_STATE_DIR=self.state, HTTP_PORT=self.http_port, LOCAL_WEB_PORT=procs.free_port(),
            LOCAL_WS_BASE_PORT=self.ws_base_port, LOCAL_PG_PORT=procs.free_port(),
            LOCAL_REDIS_PORT=procs.free_port(), WS_WORKERS=workers,
            # Metrics ports (base+0..base+10+workers), like every port here below the
            # ephemeral range, so no outgoing connection of the stack can take one first.
            LOCAL_METRICS_BASE_PORT=procs.free_run(11 + workers) + 1,
            **OVERRIDES, **(extra_env or {}))
        self.overrides = {**OVERRIDES, **(extra_env or {})}
        self.db_probes = 0
        self.probe_xacts = None  # transactions one db_counts() probe adds, measured by up()

    @property
    def ws_worker_urls(self):
        return [f"ws://127.0.0.1:{self.ws_base_port + i}" for i in range(1, self.workers + 1)]

    def _local(self, *args, timeout=240):
        return subprocess.run([str(procs.REPO / "scripts" / "local"), *args], env=self.env,
                              cwd=procs.REPO, capture_output=True, text=True, timeout=timeout)

    def up(self):
        procs.raise_nofile()
        res = self._local("up")
        if res.returncode != 0:
            out = res.stdout[-3000:] + res.stderr[-3000:]
            self.down()
            raise RuntimeError(f"scripts/local up failed ({res.returncode}):\n{out}")
        self._calibrate_probe()
        return self

    def _calibrate_probe(self):
        """How many transactions one psql probe itself adds to the app's database.

        A psql connection commits its query and, before it, the backend's own
        startup transaction (2 on Postgres 15, measured here rather than assumed).
        A backend flushes its counters when it exits, so back-to-back probes on
        the idle stack differ by exactly that cost; the smallest of a few
        differences is taken in case a server's pool connection was still
        flushing its startup.
        """
        time.sleep(1.5)
        reads = [self.db_counts()[0] for _ in range(4)]
        self.probe_xacts = min(b - a for a, b in zip(reads, reads[1:]))

    def server_pids(self):
        run = self.state / "run"
        out = {}
        for name, key in [("nginx", "nginx"), ("redis", "redis"), ("postgres", "db"), ("web", "web")]:
            pid = _read_pid(run / f"{key}.pid")
            if pid:
                out[name] = pid
        for i in range(1, self.workers + 1):
            uv = getattr(self, "_uvicorn", {}).get(i)
            pid = uv.pid if uv else _read_pid(run / f"ws-{i}.pid")
            if pid:
                out[f"ws{i}"] = pid
        return out

    def postgres_sql(self, sql, db="postgres"):
        """Run SQL as the postgres superuser over the runner's private socket (bench experiments)."""
        port = self.env["LOCAL_PG_PORT"]
        psql = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))[-1]
        res = subprocess.run(["runuser", "-u", "postgres", "--", str(psql), "-X", "-q", "-At", "-h",
                              str(self.state / "pgsock"), "-p", port, "-d", db, "-c", sql],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr[-1000:]}")
        return res.stdout

    def db_counts(self):
        """(transactions committed + rolled back, messages stored, probes so far) of the app's database.

        A probe adds `probe_xacts` transactions to that database: the caller
        subtracts them for the probes made between two readings (`db_probes`).
        """
        db = self.app_env().get("POSTGRES_DB") or "chat"
        out = self.postgres_sql("SELECT xact_commit + xact_rollback, (SELECT count(*) FROM chat_message) "
                                "FROM pg_stat_database WHERE datname = current_database()", db=db)
        self.db_probes += 1
        xacts, stored = (int(v) for v in out.strip().split("|"))
        return xacts, stored, self.db_probes

    def app_env(self):
        """The environment scripts/local gives its servers, rebuilt for a swapped-in ws server."""
        env = {}
        for name in (".env.example", ".env"):
            path = procs.REPO / name
            if path.exists():
                for line in path.read_text().splitlines():
                    if line and not line.startswith("#") and "=" in line:
                        key, value = line.split("=", 1)
                        env[key] = value
        env.update(self.env)
        for line in (self.state / "secrets.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key and not env.get(key):
                env[key] = value
        env.update(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=env["LOCAL_PG_PORT"], REDIS_HOST="127.0.0.1",
                   REDIS_PORT=env["LOCAL_REDIS_PORT"], DJANGO_SETTINGS_MODULE="config.settings",
                   PATH=f"{procs.VENV_BIN}:{env.get('PATH', '')}")
        return env

    def swap_ws_to_uvicorn(self):
        """BENCH-ONLY comparison: replace the daphne workers with uvicorn on the same ports.

        nginx keeps proxying to the same upstreams, so only the ASGI server changes.
        `--workers 1` is explicit: uvicorn would otherwise read WEB_CONCURRENCY (the
        gunicorn setting) and fork that many processes per port.
        """
        res = self._local("stop", "ws", timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"scripts/local stop ws failed: {res.stderr[-2000:]}")
        env = self.app_env()
        self._uvicorn = {}
        for i, url in enumerate(self.ws_worker_urls, 1):
            port = int(url.rsplit(":", 1)[1])
            log = self.state / "log" / f"uvicorn-{i}.log"
            self._uvicorn[i] = procs.spawn(
                [str(procs.VENV_BIN / "python"), "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
                 "--log-level", "warning", "--no-access-log"], log, env=env, cwd=procs.REPO / "django_app")
            procs.wait_port(port, self._uvicorn[i], log=log)
        self.label = "ours on uvicorn (comparison only)"

    def down(self):
        for proc in getattr(self, "_uvicorn", {}).values():
            procs.stop(proc)
        try:
            self._local("down", timeout=120)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
