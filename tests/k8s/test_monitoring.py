"""The monitoring component (overlay prod-monitoring), field by field: the PodMonitors
and scrape annotations find every ws and web pod on the port its metrics server
listens on, and only the labelled monitoring namespace reaches those ports.

PodMonitor is a CRD (Prometheus Operator) with no upstream schema here, so its
fields are checked against the objects they point at, as the HTTPRoute is.
"""
import re

from tests.k8s.manifests import configmap_data, container_port, find, one, pod_labels, pod_spec, selects, workloads

SETTING = {"ws": "WS_METRICS_PORT", "web": "WEB_METRICS_PORT"}


def test_podmonitors_select_ws_and_web_on_their_metrics_port(rendered):
    objs = rendered["prod-monitoring"]
    settings = configmap_data(objs, "chat-settings")
    monitors = find(objs, "PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"chat-ws", "chat-web"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        # The job label is the app name, so alerts.yml's job="ws" / job="web" match.
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        selected = [w for w in workloads(objs) if selects(spec["selector"], pod_labels(w))]
        assert len(selected) == 1, monitor["metadata"]["name"]
        (workload,) = selected
        name = workload["metadata"]["name"]
        assert monitor["metadata"]["name"] == f"chat-{name}"
        assert pod_labels(workload)["app.kubernetes.io/name"] == name
        (c,) = pod_spec(workload)["containers"]
        (endpoint,) = spec["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])
        # The named port is where the server listens: the setting the pod's ConfigMap carries.
        assert container_port(c, endpoint["port"]) == int(settings[SETTING[name]])


def test_scrape_annotations_agree_with_the_ports(rendered):
    objs = rendered["prod-monitoring"]
    for name in ("ws", "web"):
        deploy = one(objs, "Deployment", name)
        notes = deploy["spec"]["template"]["metadata"]["annotations"]
        (c,) = pod_spec(deploy)["containers"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == container_port(c, "metrics")


def test_only_the_monitoring_namespace_reaches_the_metrics_ports(rendered):
    objs = rendered["prod-monitoring"]
    policies = [p for p in find(objs, "NetworkPolicy")
                if any(r.get("ports") and r["ports"][0]["port"] == "metrics" for r in p["spec"].get("ingress", []))]
    assert [p["metadata"]["name"] for p in policies] == ["metrics-from-monitoring"]
    (rule,) = policies[0]["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"django-channels-stack/monitoring": "true"}}}]
    for name in ("ws", "web"):
        assert selects(policies[0]["spec"]["podSelector"], pod_labels(one(objs, "Deployment", name)))
    assert not selects(policies[0]["spec"]["podSelector"], pod_labels(one(objs, "Deployment", "nginx")))
    # nginx's public port serves no metrics: /metrics is a 404 there (tests/integration).
    nginx_template = configmap_data(objs, "nginx-templates")["default.conf.template"]
    assert "location = /metrics {\n        return 404;" in nginx_template


def test_the_other_overlays_declare_no_metrics_ports(rendered):
    # Without the component nothing opens a metrics port to anyone.
    for overlay in ("dev", "prod", "prod-gateway"):
        assert not find(rendered[overlay], "PodMonitor")
        assert not [p for p in find(rendered[overlay], "NetworkPolicy") if p["metadata"]["name"].startswith("metrics")]
