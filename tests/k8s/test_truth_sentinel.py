"""TRUTH test of the in-cluster-sentinel component (overlay dev-sentinel): the redis-node
and sentinel containers' own `sh -c` commands, run natively, must start a master, a
replica that syncs with it, and a Sentinel that names the master, and every exec
probe must pass against them.

Cluster names are swapped for loopback: the pods' DNS names (redis-node-0.redis-node,
$POD_NAME.sentinel) for 127.0.0.1, container ports for free ones, mount paths for temp
dirs, the mounted redis.conf for the generated copy the ConfigMap is built from.
"""
import os
import subprocess
import time

import pytest

from tests.k8s.manifests import ROOT, container_port, one, pod_spec, probes
from tests.k8s.test_truth import exec_probe, wait_for
from tests.stack import free_port

pytestmark = pytest.mark.slow

PASSWORD, SENTINEL_PASSWORD = "truth-test-password", "truth-test-sentinel-password"
CONF = ROOT / "k8s" / "components" / "in-cluster-data" / "generated" / "redis.conf"


def _container(rendered, name):
    (c,) = pod_spec(one(rendered["dev-sentinel"], "StatefulSet", name))["containers"]
    return c


def _start(script: str, swaps: dict, env: dict, log) -> subprocess.Popen:
    for old, new in swaps.items():
        assert old in script, f"{old!r} is no longer in the command: update this test"
        script = script.replace(old, new)
    return subprocess.Popen(["sh", "-c", script], env={"PATH": "/usr/bin:/bin", **env},
                            stdout=log, stderr=subprocess.STDOUT)


def test_redis_nodes_and_sentinel_commands_and_probes(rendered, tmp_path):
    node, sentinel = _container(rendered, "redis-node"), _container(rendered, "sentinel")
    node_cport, sentinel_cport = container_port(node, "redis"), container_port(sentinel, "sentinel")
    ports = {"redis-node-0": free_port(), "redis-node-1": free_port(), "sentinel-0": free_port()}
    script = node["command"][-1]
    procs = []
    try:
        for pod in ("redis-node-0", "redis-node-1"):
            d = tmp_path / pod
            d.mkdir()
            swaps = {"/usr/local/etc/redis/redis.conf": str(CONF), "/tmp/": f"{d}/", "--dir /data": f"--dir {d}",
                     "0.0.0.0": "127.0.0.1", '"$POD_NAME.redis-node"': "127.0.0.1",
                     "redis-node-0.redis-node 6379": f"127.0.0.1 {ports['redis-node-0']}",
                     f"--port {node_cport}": f"--port {ports[pod]}"}
            env = {"POD_NAME": pod, "REDIS_PASSWORD": PASSWORD}
            procs.append(_start(script, swaps, env, open(d / "log", "w")))
        d = tmp_path / "sentinel-0"
        d.mkdir()
        swaps = {"/sentinel/": f"{d}/", "dir /sentinel": f"dir {d}", f"port {sentinel_cport}": f"port {ports['sentinel-0']}",
                 "$POD_NAME.sentinel": "127.0.0.1",
                 "redis-node-0.redis-node 6379": f"127.0.0.1 {ports['redis-node-0']}"}
        env = {"POD_NAME": "sentinel-0", "REDIS_PASSWORD": PASSWORD, "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
               "REDIS_SENTINEL_MASTER": "chat"}
        procs.append(_start(sentinel["command"][-1], swaps, env, open(d / "log", "w")))

        node_auth = {"REDISCLI_AUTH": PASSWORD}
        for pod in ("redis-node-0", "redis-node-1"):
            wait_for(lambda: exec_probe(node["startupProbe"]["exec"]["command"], node_cport, ports[pod],
                                        node_auth).returncode == 0, 15, f"{pod} startupProbe", procs[0])
            for kind, probe in probes(node):
                result = exec_probe(probe["exec"]["command"], node_cport, ports[pod], node_auth)
                assert result.returncode == 0, f"{pod} {kind}: {result.stdout}{result.stderr}"
        # Node 1 replicates node 0 with the password (masterauth).
        role = ["redis-cli", "-p", str(ports["redis-node-1"]), "role"]
        wait_for(lambda: "connected" in subprocess.run(role, env={**os.environ, **node_auth}, capture_output=True,
                                                       text=True).stdout, 20, "redis-node-1 replicating")
        sentinel_env = {"REDISCLI_AUTH": SENTINEL_PASSWORD, "REDIS_SENTINEL_MASTER": "chat"}
        wait_for(lambda: exec_probe(sentinel["readinessProbe"]["exec"]["command"], sentinel_cport,
                                    ports["sentinel-0"], sentinel_env).returncode == 0, 20, "sentinel names the master",
                 procs[2])
        for kind, probe in probes(sentinel):
            result = exec_probe(probe["exec"]["command"], sentinel_cport, ports["sentinel-0"], sentinel_env)
            assert result.returncode == 0, f"sentinel {kind}: {result.stdout}{result.stderr}"
        # Control: a wrong Sentinel password fails the probe.
        bad = exec_probe(sentinel["readinessProbe"]["exec"]["command"], sentinel_cport, ports["sentinel-0"],
                         {**sentinel_env, "REDISCLI_AUTH": "wrong"})
        assert bad.returncode != 0
        # CONFIG exists on the nodes (Sentinel's reconfiguration needs it), behind the password.
        config = subprocess.run(["redis-cli", "-p", str(ports["redis-node-0"]), "config", "get", "maxmemory"],
                                env={**os.environ, **node_auth}, capture_output=True, text=True).stdout
        assert "maxmemory" in config
    finally:
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
