"""Load the rendered overlays and walk their pod specs.

The tests read what `kubectl apply -k` would send (scripts/k8s render), never
the source YAML, so patches, generators and components are all accounted for.
"""
from __future__ import annotations

import pathlib
import re
import subprocess

import yaml

from tests import scripts

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def load_script():
    """scripts/k8s as a module: the tests use its constants instead of restating them."""
    return scripts.load("k8s")


def render(out: pathlib.Path) -> dict[str, list[dict]]:
    """Run `scripts/k8s render` and return {overlay: [objects]}."""
    proc = subprocess.run([str(SCRIPT), "render", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"scripts/k8s render failed:\n{proc.stdout}{proc.stderr}"
    return {f.stem: [d for d in yaml.safe_load_all(f.read_text()) if d]
            for f in sorted(out.glob("*.yaml"))}


def find(objs, kind, name=None):
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return hits


def one(objs, kind, name):
    hits = find(objs, kind, name)
    assert len(hits) == 1, f"expected exactly one {kind}/{name}, found {len(hits)}"
    return hits[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def workloads(objs):
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def containers(objs):
    """Yield (workload, container) for every container and init container."""
    for w in workloads(objs):
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield w, c


def probes(container):
    """Yield (kind, probe) for each probe the container declares."""
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield kind, container[kind]


def container_port(container: dict, port) -> int:
    """Resolve a named or numbered port against the container's declared ports."""
    for p in container.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"container {container['name']}: port {port!r} is not declared")


def configmap_data(objs, name_prefix: str) -> dict:
    """Data of the generated ConfigMap (its name carries a content hash suffix)."""
    hits = [o for o in objs if o["kind"] == "ConfigMap"
            and re.fullmatch(rf"{re.escape(name_prefix)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])]
    assert len(hits) == 1, f"expected one ConfigMap {name_prefix}, found {len(hits)}"
    return hits[0]["data"]


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions)."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match = selector.get("matchLabels", {})
        exprs = selector.get("matchExpressions", [])
    else:  # a Service's plain map
        match, exprs = selector, []
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in exprs:
        value, op = labels.get(e["key"]), e["operator"]
        if op == "In" and value not in e["values"]:
            return False
        if op == "NotIn" and value in e["values"]:
            return False
        if op == "Exists" and e["key"] not in labels:
            return False
        if op == "DoesNotExist" and e["key"] in labels:
            return False
    return True
