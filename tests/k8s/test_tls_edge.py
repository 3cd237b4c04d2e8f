"""In k8s, TLS terminates at the Ingress or the Gateway (TLS_MODE stays off):
the examples must carry the TLS section, send plain HTTP to HTTPS, keep
WebSockets open as long as the stack does, and agree with the site settings
(ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS, DJANGO_TLS). Checked offline on the
rendered overlays; the Gateway API objects field by field (no schemas shipped)."""
import re

from tests.k8s.manifests import configmap_data, find, one


def _seconds(value: str) -> int:
    m = re.fullmatch(r"(\d+)(s?)", str(value))
    assert m, f"not a number of seconds: {value!r}"
    return int(m.group(1))


def _site(objs):
    settings = configmap_data(objs, "chat-settings")
    hosts = set(settings["ALLOWED_HOSTS"].split(","))
    assert settings["DJANGO_TLS"] == "true", "TLS in front of nginx: Django must trust X-Forwarded-Proto"
    assert settings.get("TLS_MODE", "off") == "off", "nginx must not terminate TLS again behind the edge"
    return settings, hosts


def test_prod_ingress_terminates_tls_and_keeps_websockets_open(rendered):
    objs = rendered["prod"]
    settings, hosts = _site(objs)
    ing = one(objs, "Ingress", "chat")
    (tls,) = ing["spec"]["tls"]
    assert tls["secretName"] and set(tls["hosts"]) == hosts
    for rule in ing["spec"]["rules"]:
        assert rule["host"] in tls["hosts"], "a host without the TLS section would be served in clear"
        assert f"https://{rule['host']}" in settings["CSRF_TRUSTED_ORIGINS"].split(",")
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            svc = one(objs, "Service", backend["name"])
            assert backend["name"] == "nginx"
            assert backend["port"]["name"] in [p["name"] for p in svc["spec"]["ports"]]
    notes = ing["metadata"]["annotations"]
    ws_idle = _seconds(settings["NGINX_WS_READ_TIMEOUT"])
    for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
        # Shorter than nginx's own idle limit would cut chat sockets at the edge.
        assert _seconds(notes[key]) >= ws_idle > int(settings["WS_PING_INTERVAL"]), key
    assert notes["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"


def test_gateway_terminates_tls_redirects_http_and_never_times_out_sockets(rendered):
    objs = rendered["prod-gateway"]
    settings, hosts = _site(objs)
    gw = one(objs, "Gateway", "chat-gateway")
    assert gw["apiVersion"] == "gateway.networking.k8s.io/v1" and gw["spec"]["gatewayClassName"]
    listeners = {l["name"]: l for l in gw["spec"]["listeners"]}
    https, http = listeners["https"], listeners["http"]
    assert (https["protocol"], https["port"], https["tls"]["mode"]) == ("HTTPS", 443, "Terminate")
    (ref,) = https["tls"]["certificateRefs"]
    assert ref["kind"] == "Secret" and ref["name"]
    assert {https["hostname"], http["hostname"]} == hosts
    assert (http["protocol"], http["port"]) == ("HTTP", 80)

    route = one(objs, "HTTPRoute", "chat")
    assert [(p["name"], p["sectionName"]) for p in route["spec"]["parentRefs"]] == [("chat-gateway", "https")]
    ws_rule = next(r for r in route["spec"]["rules"] if r["matches"][0]["path"]["value"] == "/ws/")
    assert ws_rule["timeouts"]["request"] == "0s"

    redirect = one(objs, "HTTPRoute", "chat-redirect")
    assert [(p["name"], p["sectionName"]) for p in redirect["spec"]["parentRefs"]] == [("chat-gateway", "http")]
    (rule,) = redirect["spec"]["rules"]
    (flt,) = rule["filters"]
    assert flt["type"] == "RequestRedirect"
    assert flt["requestRedirect"] == {"scheme": "https", "statusCode": 301}
    assert not find(objs, "Ingress")
