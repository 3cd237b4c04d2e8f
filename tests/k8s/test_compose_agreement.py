"""k8s and docker-compose.yml run the same commands, ports, users, images and settings.

Both are parsed (compose's `${VAR:-default}` resolved to its default), so a change
to one that the other does not follow fails here instead of in production.
"""
import re

import pytest
import yaml

from tests.k8s.manifests import ROOT, configmap_data, container_port, one, pod_spec

APP_SERVICES = ("web", "ws", "migrate")
# Compose sets these itself; in k8s they come from the image or are k8s-specific on purpose.
COMPOSE_ONLY = {
    # The image's services/bin defaults to 0.0.0.0; k8s keeps that default.
    "BIND_HOST",
}


def resolve(value):
    """`${VAR:-default}` -> default, `${VAR:?msg}` -> None (a required secret)."""
    value = str(value)
    if re.fullmatch(r"\$\{[A-Z0-9_]+:\?.*\}", value):
        return None
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


@pytest.fixture(scope="module")
def dev(rendered):
    return rendered["dev"]


def k8s_workload(objs, name):
    kind = "Job" if name == "migrate" else "Deployment"
    if name in ("postgres", "redis"):
        kind = "StatefulSet"
    w = one(objs, kind, name)
    return w, pod_spec(w)["containers"][0]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_commands_and_image_agree(compose, dev, service):
    w, c = k8s_workload(dev, service)
    # compose `command` replaces the image CMD, exactly what a k8s container's `args` does.
    assert c["args"] == compose[service]["command"]
    assert "command" not in c, "k8s `command` would replace the image ENTRYPOINT instead"
    compose_image = resolve(compose[service]["image"])
    assert c["image"].split(":")[0] == compose_image.split(":")[0]


@pytest.mark.parametrize("service", ["web", "ws"])
def test_app_ports_agree(compose, dev, service):
    env = compose[service]["environment"]
    _, c = k8s_workload(dev, service)
    assert int(resolve(env["PORT"])) == container_port(c, "http") == int(configmap_data(dev, "chat-settings")["PORT"])


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_settings_agree(compose, dev, service):
    env = compose[service]["environment"]
    settings = configmap_data(dev, "chat-settings")
    secret_keys = {k for o in dev if o["kind"] == "Secret" for k in o.get("data", {})}
    for key, raw in env.items():
        if key in COMPOSE_ONLY:
            continue
        value = resolve(raw)
        if value is None:  # a required secret in compose: k8s must carry it in the Secret
            assert key in secret_keys, f"{key} is a secret in compose but not in the k8s Secret"
            continue
        assert key in settings, f"compose sets {key} for {service}; the k8s ConfigMap does not"
        if key in ("POSTGRES_HOST", "REDIS_HOST"):
            continue  # topology: service names differ by design (db vs postgres)
        assert settings[key] == value, f"{key}: compose {value!r} != k8s {settings[key]!r}"


@pytest.mark.parametrize("service,name", [("db", "postgres"), ("redis", "redis"), ("nginx", "nginx")])
def test_stock_images_and_users_agree(compose, dev, service, name):
    if name == "nginx":
        w = one(dev, "Deployment", "nginx")
    else:
        w = one(dev, "StatefulSet", name)
    c = pod_spec(w)["containers"][0]
    assert c["image"] == compose[service]["image"]
    uid, gid = (int(x) for x in compose[service]["user"].split(":"))
    sc = pod_spec(w)["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_user_agrees_with_the_image(compose, dev, service):
    w, _ = k8s_workload(dev, service)
    # The image is built once (by the service that has `build:`) with APP_UID/APP_GID;
    # every app service also states that user.
    builder = next(svc for svc in compose.values() if "build" in svc)
    uid = int(resolve(builder["build"]["args"]["APP_UID"]))
    gid = int(resolve(builder["build"]["args"]["APP_GID"]))
    assert resolve(compose[service]["user"]) == f"{uid}:{gid}"
    sc = pod_spec(w)["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)


def test_nginx_settings_agree(compose, dev):
    env = compose["nginx"]["environment"]
    c = pod_spec(one(dev, "Deployment", "nginx"))["containers"][0]
    k8s_env = {e["name"]: e.get("value") for e in c["env"]}
    settings = configmap_data(dev, "chat-settings")
    for key, raw in env.items():
        value = resolve(raw)
        if key in ("NGINX_WS_BACKEND", "NGINX_WEB_BACKEND"):
            # Same service and port; k8s spells the full DNS name (nginx ignores the search path).
            host, port = value.split(":")
            assert re.fullmatch(rf"{host}\.\$\(POD_NAMESPACE\)\.svc\.cluster\.local:{port}", k8s_env[key])
        elif key in k8s_env:
            assert k8s_env[key] == value, key
        else:
            assert settings.get(key) == value, f"nginx {key}: compose {value!r} != k8s {settings.get(key)!r}"
    # Both mount THE template at the path the image entrypoint renders from.
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/etc/nginx/templates" in mounts
    assert any(v.startswith("./nginx/templates:/etc/nginx/templates") for v in compose["nginx"]["volumes"])
    # Every tmpfs compose gives the read-only nginx is writable in k8s too.
    for tmpfs in compose["nginx"]["tmpfs"]:
        assert tmpfs.split(":")[0] in mounts, tmpfs


def test_redis_runs_the_same_config(compose, dev):
    _, c = k8s_workload(dev, "redis")
    compose_cmd = " ".join(compose["redis"]["command"])
    conf = "/usr/local/etc/redis/redis.conf"
    assert conf in compose_cmd and c["command"][:2] == ["redis-server", conf]
    assert "--requirepass" in compose_cmd and "--requirepass" in c["command"]
    assert any(v.startswith("./redis/redis.conf:" + conf) for v in compose["redis"]["volumes"])


def test_stop_grace_periods_at_least_compose(compose, dev):
    for service in ("web", "ws"):
        grace = compose[service]["stop_grace_period"]
        seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))
        w, _ = k8s_workload(dev, service)
        assert pod_spec(w)["terminationGracePeriodSeconds"] >= seconds, service


def test_memory_limits_follow_the_settings(dev):
    settings = configmap_data(dev, "chat-settings")
    for name, key in (("web", "WEB_MEMORY_LIMIT"), ("ws", "WS_MEMORY_LIMIT")):
        _, c = k8s_workload(dev, name)
        want = settings[key].lower()
        assert want.endswith("m")
        assert c["resources"]["limits"]["memory"] == f"{want[:-1]}Mi", name
    for name, key in (("web", "WEB_CPUS"), ("ws", "WS_CPUS")):
        _, c = k8s_workload(dev, name)
        assert float(c["resources"]["limits"]["cpu"]) == float(settings[key]), name
