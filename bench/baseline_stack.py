"""BENCH-ONLY BASELINE stack: Redis + 2 daphne (tutorial consumer) + nginx.

The seed's topology, started natively on free loopback ports in a temp dir so
it can run next to anything else on the machine and vanish afterwards.
"""
import shutil
import tempfile
from pathlib import Path

from bench import procs

NGINX_CONF = """\
worker_processes auto;
worker_rlimit_nofile 65536;
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
daemon off;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {state}/tmp-body;
    proxy_temp_path {state}/tmp-proxy;
    fastcgi_temp_path {state}/tmp-fcgi;
    uwsgi_temp_path {state}/tmp-uwsgi;
    scgi_temp_path {state}/tmp-scgi;
    upstream ws {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = /nginx-health {{ return 200 "ok\\n"; }}
        location {location} {{
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


class BaselineStack(procs.LoopbackURLs):
    """Same surface the bench uses from tests/stack.NativeStack: urls + server PIDs."""

    label = "baseline (seed tutorial)"
    dialect = "chat"
    stores = False  # the tutorial persists nothing

    def __init__(self, workers=2):
        self.workers = workers
        self.state = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
        self.redis_port = procs.free_port()
        self.ws_ports = [procs.free_port() for _ in range(workers)]
        self.http_port = procs.free_port()
        self._procs = {}

    @property
    def ws_worker_urls(self):
        return [f"ws://127.0.0.1:{p}" for p in self.ws_ports]

    def up(self):
        procs.raise_nofile()
        log = self.state / "redis.log"
        self._procs[("redis", 0)] = procs.spawn(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.state)], log)
        procs.wait_port(self.redis_port, self._procs[("redis", 0)], log=log)
        env = procs.clean_env(DJANGO_SETTINGS_MODULE="bench.baseline.settings",
                              BENCH_BASELINE_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0")
        daphne = str(procs.VENV_BIN / "daphne")
        for i, port in enumerate(self.ws_ports, 1):
            log = self.state / f"ws{i}.log"
            self._procs[("ws", i)] = procs.spawn(
                [daphne, "-b", "127.0.0.1", "-p", str(port), "bench.baseline.asgi:application"], log, env=env)
        for i, port in enumerate(self.ws_ports, 1):
            procs.wait_port(port, self._procs[("ws", i)], log=self.state / f"ws{i}.log")
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in self.ws_ports)
        conf = self.state / "nginx.conf"
        conf.write_text(NGINX_CONF.format(state=self.state, servers=servers, port=self.http_port, location="/ws/"))
        log = self.state / "nginx.log"
        self._procs[("nginx", 0)] = procs.spawn(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(self.state),
             "-e", str(self.state / "nginx-error.log")], log)
        procs.wait_port(self.http_port, self._procs[("nginx", 0)], log=self.state / "nginx-error.log")
        return self

    def server_pids(self):
        """{name: pid} of every server process whose CPU the bench reports."""
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
