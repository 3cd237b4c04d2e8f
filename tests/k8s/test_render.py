"""Every overlay renders, and what it renders is complete and self-consistent."""
import subprocess

import kubernetes_validate
import pytest

from tests.k8s.manifests import ROOT, configmap_data, containers, find, one, pod_spec

NAMESPACED_EXEMPT = {"Namespace"}


def test_generated_copies_match_their_sources(k8s_script):
    # kustomize can only read inside k8s/, so the nginx template, redis.conf and the
    # settings are copies; a stale copy would deploy something the other tiers don't run.
    assert k8s_script.sync(check=True) == [], "run `scripts/k8s sync` and commit the copies"


def test_every_overlay_renders(rendered):
    assert set(rendered) == {"dev", "dev-sentinel", "prod", "prod-gateway", "prod-monitoring"}
    for overlay, objs in rendered.items():
        kinds = {o["kind"] for o in objs}
        assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "Job",
                "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds, overlay


def test_dev_runs_postgres_and_redis_in_cluster_prod_does_not(rendered):
    for name in ("postgres", "redis"):
        assert one(rendered["dev"], "StatefulSet", name)["spec"]["replicas"] == 1
        assert not find(rendered["prod"], "StatefulSet", name)
    dev = configmap_data(rendered["dev"], "chat-settings")
    assert (dev["POSTGRES_HOST"], dev["REDIS_HOST"]) == ("postgres", "redis")


def test_dev_sentinel_replaces_the_single_redis_with_nodes_and_sentinels(rendered):
    objs = rendered["dev-sentinel"]
    assert not find(objs, "StatefulSet", "redis") and not find(objs, "Service", "redis")
    assert one(objs, "StatefulSet", "redis-node")["spec"]["replicas"] == 2
    sentinels = one(objs, "StatefulSet", "sentinel")
    assert sentinels["spec"]["replicas"] == 3
    settings = configmap_data(objs, "chat-settings")
    assert settings["REDIS_MODE"] == "sentinel"
    # The app asks every Sentinel pod, by the stable names the headless Service gives them.
    service = one(objs, "Service", "sentinel")
    assert service["spec"]["clusterIP"] == "None"
    port = service["spec"]["ports"][0]["port"]
    assert settings["REDIS_SENTINELS"].split(",") == [f"sentinel-{i}.sentinel:{port}" for i in range(3)]
    # The Sentinels monitor node 0 by its stable name under the master name the app asks for.
    (c,) = sentinels["spec"]["template"]["spec"]["containers"]
    assert "sentinel monitor $REDIS_SENTINEL_MASTER redis-node-0.redis-node 6379 2" in c["command"][-1]
    env = {e["name"]: e["valueFrom"] for e in c["env"]}
    assert env["REDIS_SENTINEL_MASTER"]["configMapKeyRef"]["key"] in settings


def test_gateway_variant_replaces_nginx(rendered):
    objs = rendered["prod-gateway"]
    assert not find(objs, "Deployment", "nginx") and not find(objs, "Service", "nginx")
    assert not find(objs, "Ingress"), "prod's Ingress would point at the removed nginx Service"
    assert one(objs, "HTTPRoute", "chat")
    assert one(rendered["prod"], "Deployment", "nginx")


@pytest.mark.parametrize("overlay", ["dev", "prod", "prod-gateway", "prod-monitoring"])
def test_everything_lands_in_the_chat_namespace(rendered, overlay):
    for o in rendered[overlay]:
        if o["kind"] in NAMESPACED_EXEMPT:
            continue
        assert o["metadata"].get("namespace") == "chat", f"{o['kind']}/{o['metadata']['name']}"


@pytest.mark.parametrize("overlay", ["dev", "prod", "prod-gateway", "prod-monitoring"])
def test_every_configmap_and_secret_reference_resolves(rendered, overlay):
    # A reference kustomize failed to rewrite to the hashed name points at nothing:
    # the pod would never start (CreateContainerConfigError).
    objs = rendered[overlay]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    refs = []
    for w, c in containers(objs):
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                refs.append(("ConfigMap", src["configMapRef"]["name"]))
            if "secretRef" in src:
                refs.append(("Secret", src["secretRef"]["name"]))
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            if "configMapKeyRef" in vf:
                refs.append(("ConfigMap", vf["configMapKeyRef"]["name"]))
            if "secretKeyRef" in vf:
                refs.append(("Secret", vf["secretKeyRef"]["name"]))
    for w in find(objs, "Deployment") + find(objs, "StatefulSet") + find(objs, "Job"):
        for v in pod_spec(w).get("volumes", []):
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
    assert refs
    missing = [r for r in refs if r not in names]
    assert not missing, f"references to objects the overlay does not create: {missing}"


def test_settings_configmap_is_env_example_minus_secrets(rendered, k8s_script):
    pairs = dict(k8s_script.parse_env_example((ROOT / ".env.example").read_text()))
    data = configmap_data(rendered["dev"], "chat-settings")
    for key in k8s_script.SECRET_KEYS:
        assert key not in data, f"secret {key} leaked into the ConfigMap"
    overridden = {"POSTGRES_HOST", "REDIS_HOST"}
    expected = {k: v for k, v in pairs.items() if k not in k8s_script.SECRET_KEYS and k not in overridden}
    assert {k: data.get(k) for k in expected} == expected


def test_rendered_secrets_hold_only_placeholders(rendered, k8s_script):
    import base64
    for overlay, objs in rendered.items():
        secrets = [o for o in objs if o["kind"] == "Secret"]
        assert len(secrets) == 1, overlay
        values = {k: base64.b64decode(v).decode() for k, v in secrets[0].get("data", {}).items()}
        assert "DJANGO_SECRET_KEY" in values
        assert set(values.values()) == {k8s_script.RENDER_PLACEHOLDER}, overlay


def test_real_secret_files_are_gitignored():
    for env in ("dev", "prod"):
        path = f"k8s/overlays/{env}/secrets.env"
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} must be in .gitignore (it holds real secrets)"


def test_no_secret_value_is_committed_in_k8s():
    # Only the *.example templates exist in git, with every value empty.
    tracked = subprocess.run(["git", "ls-files", "--others", "--cached", "--exclude-standard", "k8s"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.endswith("secrets.env")]
    for example in ROOT.glob("k8s/overlays/*/secrets.env.example"):
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert value == "", f"{example}: {key} has a value"


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_every_object_is_valid_against_kubernetes_schemas(rendered, k8s_script, version):
    assert version in k8s_script.SCHEMA_VERSIONS
    crds = []
    for overlay, objs in rendered.items():
        for o in objs:
            if (o["apiVersion"], o["kind"]) in k8s_script.CRD_KINDS:
                crds.append(o["kind"])  # checked field by field in test_policy.py
                continue
            kubernetes_validate.validate(o, version, strict=True)
    # Only the optional Gateway API objects and PodMonitors may skip the upstream schemas.
    assert sorted(crds) == ["Gateway", "HTTPRoute", "HTTPRoute", "PodMonitor", "PodMonitor"], crds


def test_schema_validation_rejects_a_broken_object(rendered):
    # The validator really is strict: an unknown field fails.
    import copy
    web = copy.deepcopy(one(rendered["dev"], "Deployment", "web"))
    pod_spec(web)["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, "1.30.0", strict=True)
