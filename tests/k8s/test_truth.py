"""TRUTH test: the manifests' probes and commands, executed against real processes.

A probe path that no server answers, a port nothing listens on, a command the image
does not have, or settings a server refuses to boot with all fail here, offline,
instead of as a CrashLoopBackOff in the cluster. Servers come from the native stack
(tests/stack.py, the same scripts/local operators run); the app containers' commands
are started here with the rendered ConfigMap as their environment.
"""
import os
import signal
import subprocess
import time

import pytest
import requests

from tests.k8s.manifests import ROOT, configmap_data, container_port, containers, one, pod_spec, probes
from tests.stack import free_port

pytestmark = pytest.mark.slow

# What the kubelet sends as Host when a probe sets none: the pod's IP and port.
POD_IP = "10.244.0.10"
SECRET_KEYS = ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
# Every container the manifests declare, and how this module exercises it.
COVERED = {"web", "ws", "migrate", "nginx", "postgres", "redis",
           "redis-node", "sentinel"}  # the last two: test_truth_sentinel.py


def wait_for(check, timeout, what, proc=None):
    """Poll check() until truthy, at most `timeout` seconds (and stop if proc died)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode} before it was ready")
        try:
            result = check()
            if result:
                return result
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"{what}: not ready within {timeout}s ({last})")


def http_probe(probe, container, port):
    """One kubelet-style HTTP GET; returns the status code."""
    get = probe["httpGet"]
    container_port(container, get["port"])  # the probe's port is one the container declares
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    headers.setdefault("Host", f"{POD_IP}:{container_port(container, get['port'])}")
    resp = requests.get(f"http://127.0.0.1:{port}{get['path']}", headers=headers,
                        timeout=probe.get("timeoutSeconds", 1) + 2, allow_redirects=False)
    return resp.status_code


def app_env(rendered_objs, stack, port):
    """The pod's environment (rendered ConfigMap + Secret keys), pointed at the native servers."""
    env = dict(configmap_data(rendered_objs, "chat-settings"))
    env.update({k: stack.settings[k] for k in SECRET_KEYS})
    env.update({
        "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": stack.settings["POSTGRES_PORT"],
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": stack.settings["REDIS_PORT"],
        # Loopback instead of the pod's 0.0.0.0: tests keep traffic on 127.0.0.0/8.
        "PORT": str(port), "BIND_HOST": "127.0.0.1",
        # Free ports instead of the pod's fixed metrics ports (other stacks run here too).
        "WS_METRICS_PORT": str(free_port()), "WEB_METRICS_PORT": str(free_port()),
        # What services/Dockerfile sets in the image.
        "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1",
        "PATH": f"{ROOT / 'services' / 'bin'}:{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
    })
    return env


def test_every_container_is_covered(rendered):
    names = {c["name"] for objs in rendered.values() for _, c in containers(objs)}
    assert names == COVERED, "a new container needs its probes and command exercised here"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
@pytest.mark.parametrize("name", ["web", "ws"])
def test_app_command_boots_and_answers_every_probe(rendered, native_stack, tmp_path, overlay, name):
    objs = rendered[overlay]
    deploy = one(objs, "Deployment", name)
    (c,) = pod_spec(deploy)["containers"]
    # The image's PATH has services/bin: args ["web"] runs services/bin/web.
    exe = ROOT / "services" / "bin" / c["args"][0]
    assert exe.is_file() and os.access(exe, os.X_OK), f"{exe} missing or not executable"
    port = free_port()
    log = (tmp_path / f"{name}.log").open("w")
    env = app_env(objs, native_stack, port)
    proc = subprocess.Popen([str(exe), *c["args"][1:]], env=env,
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found = dict(probes(c))
        startup = found["startupProbe"]
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        wait_for(lambda: http_probe(startup, c, port) == 200, budget, f"{overlay} {name} startupProbe", proc)
        for kind, probe in found.items():
            status = http_probe(probe, c, port)
            assert 200 <= status < 300, f"{overlay} {name} {kind} {probe['httpGet']['path']} -> {status}"
        # The metrics port the pod's settings name answers (the monitoring component scrapes it).
        metrics_port = env["WS_METRICS_PORT" if name == "ws" else "WEB_METRICS_PORT"]
        assert requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).status_code == 200
        # The kubelet sends SIGTERM after preStop; the server must be gone within the grace period.
        grace = pod_spec(deploy)["terminationGracePeriodSeconds"]
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace - pause)
        assert time.monotonic() - started < grace - pause
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_probe_check_fails_on_a_wrong_path(rendered, native_stack):
    # Control: the probe runner above does report a missing endpoint.
    (c,) = pod_spec(one(rendered["dev"], "Deployment", "nginx"))["containers"]
    probe = {"httpGet": {"path": "/no-such-probe-endpoint", "port": "http"}}
    port = native_stack.ports["LOCAL_WEB_PORT"]
    assert http_probe(probe, c, port) >= 400


def test_migrate_job_command_succeeds(rendered, native_stack):
    job = one(rendered["dev"], "Job", "migrate")
    (c,) = pod_spec(job)["containers"]
    exe = ROOT / "services" / "bin" / c["args"][0]
    proc = subprocess.run([str(exe), *c["args"][1:]], env=app_env(rendered["dev"], native_stack, free_port()),
                          cwd=ROOT, capture_output=True, text=True, timeout=job["spec"]["activeDeadlineSeconds"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No migrations to apply" in proc.stdout  # the native runner already migrated the same DB


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_nginx_probes_answer_on_the_native_nginx(rendered, native_stack, overlay):
    # The native nginx renders THE template the k8s nginx mounts (its NGINX_PORT is HTTP_PORT).
    (c,) = pod_spec(one(rendered[overlay], "Deployment", "nginx"))["containers"]
    for kind, probe in probes(c):
        status = http_probe(probe, c, native_stack.ports["HTTP_PORT"])
        assert 200 <= status < 300, f"nginx {kind} {probe['httpGet']['path']} -> {status}"


def exec_probe(command, container_port_, native_port, env):
    """Run an exec probe's argv with the container port swapped for the native one."""
    argv = [a.replace(str(container_port_), str(native_port)) for a in command]
    return subprocess.run(argv, env={"PATH": "/usr/lib/postgresql/15/bin:/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=10)


def test_postgres_probes_against_the_native_postgres(rendered, native_stack):
    (c,) = pod_spec(one(rendered["dev"], "StatefulSet", "postgres"))["containers"]
    cport = container_port(c, "postgres")
    native = native_stack.settings["POSTGRES_PORT"]
    for kind, probe in probes(c):
        proc = exec_probe(probe["exec"]["command"], cport, native, {})
        assert proc.returncode == 0, f"postgres {kind}: {proc.stdout}{proc.stderr}"
    # Control: the same probe fails where no server listens.
    assert exec_probe(c["readinessProbe"]["exec"]["command"], cport, free_port(), {}).returncode != 0


def test_redis_command_and_probes_on_a_real_redis(rendered, tmp_path):
    """Start redis-server with the StatefulSet's argv and mounted config, then probe it."""
    sts = one(rendered["dev"], "StatefulSet", "redis")
    (c,) = pod_spec(sts)["containers"]
    cport = container_port(c, "redis")
    port, password = free_port(), "truth-test-password"
    conf_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "config")
    conf = ROOT / "k8s" / "components" / "in-cluster-data" / "generated" / "redis.conf"
    swaps = {conf_mount: str(conf.parent), "0.0.0.0": "127.0.0.1", str(cport): str(port),
             "/data": str(tmp_path), "$(REDIS_PASSWORD)": password}
    argv = []
    for arg in c["command"]:
        for old, new in swaps.items():
            arg = arg.replace(old, new) if arg.startswith(old) or arg == old else arg
        argv.append(arg)
    assert argv[0] == "redis-server" and str(conf) in argv
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        auth = {"REDISCLI_AUTH": password}
        wait_for(lambda: exec_probe(c["startupProbe"]["exec"]["command"], cport, port, auth).returncode == 0,
                 10, "redis startupProbe", proc)
        for kind, probe in probes(c):
            result = exec_probe(probe["exec"]["command"], cport, port, auth)
            assert result.returncode == 0, f"redis {kind}: {result.stdout}{result.stderr}"
        # Control: a wrong password makes the probe fail (redis-cli alone would exit 0).
        bad = exec_probe(c["readinessProbe"]["exec"]["command"], cport, port, {"REDISCLI_AUTH": "wrong"})
        assert bad.returncode != 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
