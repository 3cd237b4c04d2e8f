"""Policy over the rendered YAML: what an operator relies on during an incident."""
import re

import pytest

from tests.k8s.manifests import (configmap_data, container_port, containers, find, one,
                                 pod_labels, pod_spec, probes, selects, workloads)

OVERLAYS = ["dev", "dev-sentinel", "prod", "prod-gateway", "prod-monitoring"]
APP_UID = 10001  # cross-checked against .env.example's APP_UID below
EXPECTED_UIDS = {"web": APP_UID, "ws": APP_UID, "migrate": APP_UID, "nginx": 101,
                 "postgres": 999, "redis": 999, "redis-node": 999, "sentinel": 999}


def settings(objs):
    return configmap_data(objs, "chat-settings")


def cpu(value) -> float:
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def mem(value) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(value))
    assert m, f"unexpected memory quantity {value!r}"
    return int(m.group(1)) * units.get(m.group(2), 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_server_container_has_three_real_probes(rendered, overlay):
    for w, c in containers(rendered[overlay]):
        if w["kind"] == "Job":
            # A one-shot command has nothing to probe; it is bounded instead.
            assert w["spec"]["activeDeadlineSeconds"] > 0 and w["spec"]["backoffLimit"] >= 0
            continue
        found = dict(probes(c))
        assert set(found) == {"startupProbe", "readinessProbe", "livenessProbe"}, c["name"]
        for kind, p in found.items():
            assert {"httpGet", "exec", "tcpSocket", "grpc"} & set(p), f"{c['name']} {kind}"
            if "httpGet" in p:
                assert p["httpGet"]["path"].startswith("/")
                container_port(c, p["httpGet"]["port"])  # declared, by name or number


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(rendered, overlay):
    for w, c in containers(rendered[overlay]):
        res = c.get("resources", {})
        for key in ("cpu", "memory"):
            assert key in res.get("requests", {}) and key in res.get("limits", {}), f"{c['name']} {key}"
        assert cpu(res["requests"]["cpu"]) <= cpu(res["limits"]["cpu"]), c["name"]
        assert mem(res["requests"]["memory"]) <= mem(res["limits"]["memory"]), c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_non_root_and_locked_down(rendered, overlay):
    for w, c in containers(rendered[overlay]):
        pod = pod_spec(w)
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        where = f"{overlay} {w['kind']}/{w['metadata']['name']} {c['name']}"
        assert psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, where
        assert psc.get("runAsUser") == EXPECTED_UIDS[c["name"]], where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert csc.get("allowPrivilegeEscalation") is False, where
        assert csc.get("privileged", False) is False, where
        assert csc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not csc.get("capabilities", {}).get("add"), where
        assert csc.get("readOnlyRootFilesystem") is True, where
        assert pod.get("automountServiceAccountToken") is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where


def test_app_uid_matches_the_image_user(rendered):
    assert int(settings(rendered["dev"])["APP_UID"]) == APP_UID


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ws_grace_period_covers_prestop_and_drain(rendered, overlay):
    objs = rendered[overlay]
    s = settings(objs)
    ws = one(objs, "Deployment", "ws")
    (c,) = pod_spec(ws)["containers"]
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 1, "ws needs a preStop pause so endpoints drop it before the drain"
    needed = pause + int(s["WS_DRAIN_SECONDS"]) + int(s["WS_APP_CLOSE_TIMEOUT"])
    assert pod_spec(ws)["terminationGracePeriodSeconds"] >= needed
    web = one(objs, "Deployment", "web")
    (wc,) = pod_spec(web)["containers"]
    web_needed = wc["lifecycle"]["preStop"]["sleep"]["seconds"] + int(s["WEB_GRACEFUL_TIMEOUT"])
    assert pod_spec(web)["terminationGracePeriodSeconds"] >= web_needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_ws_deployment_on_cpu(rendered, overlay):
    objs = rendered[overlay]
    (hpa,) = find(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "ws")
    ws = one(objs, "Deployment", "ws")
    # A fixed replicas field would fight the HPA on every re-apply.
    assert "replicas" not in ws["spec"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in pod_spec(ws)["containers"][0]["resources"]["requests"]  # utilization needs it
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    if overlay.startswith("prod"):
        assert hpa["spec"]["minReplicas"] >= 2, "prod keeps a second worker for drains"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdbs_cover_web_and_ws(rendered, overlay):
    objs = rendered[overlay]
    for name in ("web", "ws"):
        pdb = one(objs, "PodDisruptionBudget", name)
        deploy = one(objs, "Deployment", name)
        assert selects(pdb["spec"]["selector"], pod_labels(deploy))
        assert pdb["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_ports_agree(rendered, overlay):
    objs = rendered[overlay]
    for svc in find(objs, "Service"):
        matched = [w for w in workloads(objs) if w["kind"] != "Job"
                   and selects(svc["spec"]["selector"], pod_labels(w))]
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {len(matched)} workloads"
        (c,) = pod_spec(matched[0])["containers"]
        for port in svc["spec"]["ports"]:
            target = container_port(c, port.get("targetPort", port["port"]))
            # The readiness probe gates this Service's endpoints: it must watch the served port.
            rp = c["readinessProbe"]
            if "httpGet" in rp:
                assert container_port(c, rp["httpGet"]["port"]) == target
            else:
                assert str(target) in rp["exec"]["command"][-1] or str(target) in rp["exec"]["command"]


def test_ports_match_the_contract(rendered):
    objs = rendered["dev"]
    port = int(settings(objs)["PORT"])
    assert port == 8000
    for name in ("web", "ws"):
        svc = one(objs, "Service", name)
        (c,) = pod_spec(one(objs, "Deployment", name))["containers"]
        assert svc["spec"]["ports"][0]["port"] == port == container_port(c, "http")
    nginx = one(objs, "Service", "nginx")
    (c,) = pod_spec(one(objs, "Deployment", "nginx"))["containers"]
    assert nginx["spec"]["ports"][0]["port"] == 80 and container_port(c, "http") == 8080
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NGINX_PORT"] == "8080"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_nginx_backends_are_the_services_full_names(rendered, overlay):
    # nginx's resolver ignores the DNS search path: a short name would never resolve.
    objs = rendered[overlay]
    (c,) = pod_spec(one(objs, "Deployment", "nginx"))["containers"]
    names = [e["name"] for e in c["env"]]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for var, svc_name in (("NGINX_WS_BACKEND", "ws"), ("NGINX_WEB_BACKEND", "web")):
        svc = one(objs, "Service", svc_name)
        want = f"{svc_name}.$(POD_NAMESPACE).svc.cluster.local:{svc['spec']['ports'][0]['port']}"
        assert env[var]["value"] == want
        assert names.index("POD_NAMESPACE") < names.index(var), "$(VAR) expands only earlier vars"
    assert env["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"]["value"] == "1"


def _django_host_ok(host: str, allowed: list[str]) -> bool:
    """django.http.request.validate_host semantics."""
    host = host.rsplit(":", 1)[0].lower()
    for pattern in allowed:
        pattern = pattern.strip().lower()
        if pattern == "*" or pattern == host or (
                pattern.startswith(".") and (host.endswith(pattern) or host == pattern[1:])):
            return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_probes_send_a_host_django_accepts(rendered, overlay):
    objs = rendered[overlay]
    allowed = settings(objs)["ALLOWED_HOSTS"].split(",")
    (c,) = pod_spec(one(objs, "Deployment", "web"))["containers"]
    for kind, p in probes(c):
        headers = {h["name"].lower(): h["value"] for h in p["httpGet"].get("httpHeaders", [])}
        assert "host" in headers, f"{kind}: the kubelet would send the pod IP, which Django refuses"
        assert _django_host_ok(headers["host"], allowed), f"{kind}: {headers['host']} not in {allowed}"


def _ingress_sources(objs, target_labels):
    """Which workloads of this namespace may open connections to pods with target_labels,
    plus whether any non-pod peer (namespace or ipBlock, or everyone) is allowed."""
    policies = [p for p in find(objs, "NetworkPolicy")
                if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                and selects(p["spec"]["podSelector"], target_labels)]
    assert policies, "no NetworkPolicy selects these pods: they accept everything"
    sources, external = set(), []
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers:
                external.append("anyone")
                sources |= {w["metadata"]["name"] for w in workloads(objs)}
                continue
            for peer in peers:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    sources |= {w["metadata"]["name"] for w in workloads(objs)
                                if selects(peer["podSelector"], pod_labels(w))}
                else:
                    external.append(peer)
    return sources, external


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_default_deny(rendered, overlay):
    deny = one(rendered[overlay], "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_only_nginx_reaches_web_and_ws(rendered, overlay):
    objs = rendered[overlay]
    for name in ("web", "ws"):
        sources, external = _ingress_sources(objs, pod_labels(one(objs, "Deployment", name)))
        assert sources == {"nginx"} and not external, f"{name}: {sources} {external}"
    sources, external = _ingress_sources(objs, pod_labels(one(objs, "Deployment", "nginx")))
    assert external == ["anyone"], "nginx is the public entry"


def test_with_the_gateway_only_its_namespace_reaches_web_and_ws(rendered):
    objs = rendered["prod-gateway"]
    for name in ("web", "ws"):
        sources, external = _ingress_sources(objs, pod_labels(one(objs, "Deployment", name)))
        assert sources == set()
        assert external == [{"namespaceSelector": {"matchLabels": {"django-channels-stack/gateway": "true"}}}]


def test_only_the_app_pods_reach_postgres_and_redis(rendered):
    objs = rendered["dev"]
    for name in ("postgres", "redis"):
        sources, external = _ingress_sources(objs, pod_labels(one(objs, "StatefulSet", name)))
        assert sources == {"web", "ws", "migrate"} and not external, f"{name}: {sources}"


def test_with_sentinel_only_the_app_and_the_topology_reach_redis(rendered):
    objs = rendered["dev-sentinel"]
    expected = {"redis-node": {"web", "ws", "migrate", "sentinel", "redis-node"},
                "sentinel": {"web", "ws", "migrate", "sentinel"}}
    for name, want in expected.items():
        sources, external = _ingress_sources(objs, pod_labels(one(objs, "StatefulSet", name)))
        assert sources == want and not external, f"{name}: {sources}"


def test_httproute_splits_ws_and_web_like_nginx(rendered):
    objs = rendered["prod-gateway"]
    route = one(objs, "HTTPRoute", "chat")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"][0]["name"]
    rules = {r["matches"][0]["path"]["value"]: r for r in route["spec"]["rules"]}
    assert set(rules) == {"/ws/", "/"}
    for path, svc_name in (("/ws/", "ws"), ("/", "web")):
        rule = rules[path]
        assert rule["matches"][0]["path"]["type"] == "PathPrefix"
        (backend,) = rule["backendRefs"]
        svc = one(objs, "Service", backend["name"])
        assert backend["name"] == svc_name
        assert backend["port"] in [p["port"] for p in svc["spec"]["ports"]]
    # A WebSocket lives for hours: the request timeout must be disabled ("0s").
    assert rules["/ws/"]["timeouts"]["request"] == "0s"
    assert re.fullmatch(r"\d+s", rules["/"]["timeouts"]["request"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_tagged_and_prod_never_runs_latest(rendered, overlay):
    for w, c in containers(rendered[overlay]):
        assert re.search(r":[\w.-]+$", c["image"]), c["image"]
        if overlay.startswith("prod"):
            assert not c["image"].endswith(":latest"), c["image"]


def test_rollouts_never_drop_below_the_current_capacity(rendered):
    for name in ("web", "ws", "nginx"):
        strategy = one(rendered["prod"], "Deployment", name)["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name
