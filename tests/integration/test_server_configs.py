"""The shipped server configs load in the real servers, in the shapes compose and
k8s use them (not only the native runner's), and the native runner's instances
are isolated from each other."""
import os
import runpy
import subprocess
from pathlib import Path

from tests.stack import ROOT, NativeStack, alive, free_port

TEMPLATE = ROOT / "nginx" / "templates" / "default.conf.template"
NGINX_VARS = {
    "NGINX_PORT": "8080",
    "NGINX_STATUS_PORT": "8081",
    "NGINX_LOCAL_RESOLVERS": "127.0.0.11",
    "NGINX_RESOLVER_VALID": "2s",
    "NGINX_WS_BACKEND": "ws:8000",
    "NGINX_WEB_BACKEND": "web:8000",
    "NGINX_WS_READ_TIMEOUT": "3600s",
    "NGINX_MAX_CONN_PER_IP": "200",
    "NGINX_CLIENT_MAX_BODY_SIZE": "1m",
}


def render(env: dict[str, str]) -> str:
    shell_format = " ".join(f"${{{k}}}" for k in NGINX_VARS)
    return subprocess.run(["envsubst", shell_format], input=TEMPLATE.read_text(), env=env,
                          capture_output=True, text=True, check=True).stdout


def test_template_renders_and_passes_nginx_t_with_dns_backends(tmp_path):
    """The compose/k8s shape: host:port backends re-resolved through a resolver."""
    conf = render(NGINX_VARS)
    assert "${NGINX_" not in conf
    assert "set $ws_backend ws:8000;" in conf and "proxy_pass http://$ws_backend;" in conf
    (tmp_path / "default.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{ client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};\n"
        f"fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};\n"
        f"include {tmp_path}/default.conf; }}\n")
    proc = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_template_leaves_nginx_variables_alone():
    conf = render(NGINX_VARS)
    for nginx_var in ("$remote_addr", "$http_upgrade", "$connection_upgrade", "$redacted_uri",
                      "${redact_path}?REDACTED"):
        assert nginx_var in conf


def redis_cli(port: int, password: str, *args: str) -> str:
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          env={**os.environ, "REDISCLI_AUTH": password},
                          capture_output=True, text=True, timeout=10).stdout.strip()


def test_second_instance_coexists_and_redis_refuses_dangerous_commands():
    """`up db redis` (what scripts/test does for the unit tests) beside the session stack."""
    stack = NativeStack(workers=1)
    try:
        stack.up("db", "redis")
        port, password = stack.ports["LOCAL_REDIS_PORT"], stack.settings["REDIS_PASSWORD"]
        assert redis_cli(port, password, "ping") == "PONG"
        for command in (["FLUSHALL"], ["CONFIG", "GET", "maxmemory"], ["KEYS", "*"], ["SHUTDOWN"]):
            assert "unknown command" in redis_cli(port, password, *command).lower(), command
        # No password, no service.
        assert "NOAUTH" in redis_cli(port, "", "ping")
        assert stack.pid("db") and stack.pid("redis")
        assert oct(Path(stack.state_dir, "secrets.env").stat().st_mode & 0o777) == "0o600"
    finally:
        pids = [stack.pid("db"), stack.pid("redis")]
        stack.down()
    assert not any(alive(pid) for pid in pids if pid)
    assert not stack.state_dir.exists()


def test_a_port_clash_at_start_is_retried_and_its_logs_set_aside():
    """Another process holds a port the stack picked: the stack starts on fresh ports,
    and the logs tests read for crashes are the running stack's only (the Postgres of
    the failed attempt was stopped, which it logs as background workers exiting)."""
    import socket

    stack = NativeStack(workers=1)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", int(stack.ports["LOCAL_REDIS_PORT"])))
    squatter.listen()
    try:
        stack.up("db", "redis")
        assert stack.pid("db") and stack.pid("redis")
        port, password = stack.ports["LOCAL_REDIS_PORT"], stack.settings["REDIS_PASSWORD"]
        assert redis_cli(port, password, "ping") == "PONG"
        failed = (stack.state_dir / "log.failed-attempt-1" / "db.log").read_text()
        assert "shutting down" in failed
        assert "shutting down" not in stack.log_path("db").read_text()
    finally:
        squatter.close()
        stack.down()


def test_gunicorn_config_reads_the_documented_settings(monkeypatch):
    env = {"BIND_HOST": "127.0.0.1", "PORT": str(free_port()), "WEB_CONCURRENCY": "3",
           "WEB_THREADS": "5", "WEB_TIMEOUT": "31", "WEB_GRACEFUL_TIMEOUT": "21"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    conf = runpy.run_path(str(ROOT / "services" / "gunicorn.conf.py"))
    assert conf["bind"] == f"127.0.0.1:{env['PORT']}"
    assert (conf["workers"], conf["threads"], conf["timeout"], conf["graceful_timeout"]) == (3, 5, 31, 21)
    assert conf["worker_class"] == "gthread" and conf["accesslog"] == "-"
    assert "%(U)s" in conf["access_log_format"] and "%(r)s" not in conf["access_log_format"]
