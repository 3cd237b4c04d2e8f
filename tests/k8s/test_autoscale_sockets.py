"""k8s/components/autoscale-sockets, checked offline: prod + the component is
rendered, schema-validated, and the parts no schema covers (the custom-metric
wiring between the HPA and prometheus-adapter's rule, the headless Service
nginx retries over) are checked field by field.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.k8s.manifests import ROOT, container_port, one, pod_labels, pod_spec, selects

COMPONENT = ROOT / "k8s" / "components" / "autoscale-sockets"
METRIC = "wsworker_sockets_open"  # agreed with the metrics work (docs/operations.md)
TARGET_SHARE = 0.7  # of WS_MAX_SOCKETS: docs/operations.md "Autoscaling"


@pytest.fixture(scope="module")
def objs(tmp_path_factory, k8s_script):
    tree = tmp_path_factory.mktemp("k8s-sockets") / "k8s"
    shutil.copytree(ROOT / "k8s", tree, ignore=shutil.ignore_patterns("secrets.env", "README.md"))
    for example in tree.glob("overlays/*/secrets.env.example"):
        k8s_script.write_secrets(example.parent.name, example.with_name("secrets.env"), placeholder=True)
    overlay = tree / "overlays" / "prod-sockets"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: chat\n"
        "resources:\n  - ../prod\ncomponents:\n  - ../../components/autoscale-sockets\n")
    proc = subprocess.run([k8s_script.kubectl(), "kustomize", str(overlay)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def adapter():
    return yaml.safe_load((COMPONENT / "prometheus-adapter-values.yaml").read_text())


def _settings(k8s_script) -> dict:
    return dict(k8s_script.parse_env_example((ROOT / ".env.example").read_text()))


def test_every_object_passes_the_kubernetes_schemas(objs, k8s_script):
    import kubernetes_validate

    for obj in objs:
        for version in k8s_script.SCHEMA_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_hpa_scales_on_sockets_per_pod_then_cpu(objs, k8s_script):
    hpa = one(objs, "HorizontalPodAutoscaler", "ws")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ws"
    sockets, cpu = hpa["spec"]["metrics"]
    assert sockets["type"] == "Pods"
    assert sockets["pods"]["metric"] == {"name": METRIC}
    assert sockets["pods"]["target"]["type"] == "AverageValue"
    cap = int(_settings(k8s_script)["WS_MAX_SOCKETS"])
    assert int(sockets["pods"]["target"]["averageValue"]) == int(cap * TARGET_SHARE), \
        "the target per pod is 70 % of WS_MAX_SOCKETS: change both (and docs/operations.md)"
    assert cpu["type"] == "Resource" and cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # The prod bounds and the slow scale-down (each removal drains) survive the patch.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def test_prometheus_adapter_rule_serves_the_hpa_metric(objs, adapter):
    """prometheus-adapter's config has no published schema: each field it needs, checked."""
    (rule,) = adapter["rules"]["custom"]
    assert set(rule) == {"seriesQuery", "resources", "name", "metricsQuery"}
    assert re.fullmatch(rf"{METRIC}\{{.*\}}", rule["seriesQuery"])
    assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
    assert rule["resources"] == {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
    assert re.fullmatch(rule["name"]["matches"], METRIC)
    hpa_metric = one(objs, "HorizontalPodAutoscaler", "ws")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == hpa_metric
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"], placeholder
    assert adapter["prometheus"]["url"].startswith("http") and isinstance(adapter["prometheus"]["port"], int)


def test_nginx_reaches_ready_ws_pods_through_the_headless_service(objs):
    svc = one(objs, "Service", "ws-pods")
    spec = svc["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
    ws = one(objs, "Deployment", "ws")
    assert selects(spec["selector"], pod_labels(ws))
    (port,) = spec["ports"]
    (container,) = pod_spec(ws)["containers"]
    assert container_port(container, port["targetPort"]) == port["port"]
    # Readiness is what takes a full worker (WS_MAX_SOCKETS) out of the DNS answer.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (nginx,) = pod_spec(one(objs, "Deployment", "nginx"))["containers"]
    names = [e["name"] for e in nginx["env"]]
    env = {e["name"]: e.get("value") for e in nginx["env"]}
    assert env["NGINX_WS_BACKEND"] == f"ws-pods.$(POD_NAMESPACE).svc.cluster.local:{port['port']}"
    assert names.index("POD_NAMESPACE") < names.index("NGINX_WS_BACKEND")
    assert one(objs, "Service", "ws")["spec"].get("clusterIP") != "None", "Service ws itself is unchanged"


def test_nginx_retries_a_refused_handshake_on_the_next_worker():
    template = (ROOT / "nginx" / "templates" / "default.conf.template").read_text()
    ws = re.search(r"location /ws/ \{(.*?)\n    \}", template, flags=re.S).group(1)
    assert re.search(r"^\s*proxy_next_upstream error timeout http_503;", ws, flags=re.M)
    tries = int(re.search(r"^\s*proxy_next_upstream_tries (\d+);", ws, flags=re.M).group(1))
    assert 3 <= tries <= 32, "bounded, and enough for a fleet"
    assert re.search(r"error_page 502 504 =503 @ws_unavailable;", ws)
    named = re.search(r"location @ws_unavailable \{(.*?)\}", template, flags=re.S).group(1)
    assert re.search(r"add_header Retry-After \d+ always;", named) and "return 503;" in named
