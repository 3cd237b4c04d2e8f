"""Run hadolint and checkov over the deployables and fail on any finding not in baseline.yaml.

Why a baseline file instead of inline skip comments: every accepted finding is
listed in one reviewed place with its justification, and the files owned by
other tiers stay free of scanner noise. A finding is "new" unless an entry of
baseline.yaml matches its check id and resource; entries that match nothing are
reported as stale so the baseline cannot silently outgrow the code.

Runs inside .venv-scan (scripts/scan creates it). Usage:
  scan.py [--k8s-dir DIR]   DIR: already rendered k8s YAML (default: render with scripts/k8s)
"""
import argparse
import fnmatch
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERE = ROOT / "security"
BIN = pathlib.Path(sys.executable).parent
# checkov must never phone home: no API key, no guideline download, no upload.
OFFLINE_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_SKIP_DOWNLOAD": "TRUE",
               "ANONYMOUS_TELEMETRY": "false", "LOG_LEVEL": "ERROR"}


def load_baseline():
    """[(tool, check, resource-glob, why)]; an entry without a justification is an error."""
    data = yaml.safe_load((HERE / "baseline.yaml").read_text()) or {}
    entries = []
    for tool in ("hadolint", "checkov"):
        for item in data.get(tool) or []:
            why = str(item.get("why", "")).strip()
            if not why:
                raise SystemExit(f"scan: baseline.yaml {tool} {item.get('check')}: missing 'why'")
            entries.append((tool, str(item["check"]), str(item.get("resource", "*")), why))
    return entries


def run_hadolint(dockerfile):
    """hadolint findings as (check, resource, message)."""
    proc = subprocess.run([str(BIN / "hadolint"), "--no-fail", "-f", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"scan: hadolint failed ({proc.returncode}): {proc.stderr.strip()}")
    rel = dockerfile.relative_to(ROOT)
    return [(f["code"], f"{rel}:{f['line']}", f["message"]) for f in json.loads(proc.stdout)]


def run_checkov(label, args):
    """checkov failed checks as (check, resource, message); passed count for the summary."""
    cmd = [str(BIN / "checkov"), "--quiet", "--compact", "--skip-download", "-o", "json", *args]
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    # checkov exits 1 when checks fail; anything else (or no JSON) is a scanner crash.
    if proc.returncode not in (0, 1):
        raise SystemExit(f"scan: checkov {label} crashed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    try:
        reports = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError as exc:
        raise SystemExit(f"scan: checkov {label} gave no JSON: {exc}\n{proc.stdout[:500]}") from exc
    if isinstance(reports, dict):
        reports = [reports]
    findings, passed = [], 0
    for report in reports:
        results = report.get("results") or {}
        passed += int((report.get("summary") or {}).get("passed", 0))
        for f in results.get("failed_checks") or []:
            path = str(f.get("file_path", "")).lstrip("/")
            findings.append((f["check_id"], f"{label}:{path}:{f.get('resource', '')}", f.get("check_name", "")))
    if not reports and "No files" not in proc.stdout:
        raise SystemExit(f"scan: checkov {label} scanned nothing:\n{proc.stderr[-2000:]}")
    return findings, passed


def render_k8s(out):
    """Rendered overlays: kubectl kustomize via scripts/k8s, with placeholder secrets."""
    proc = subprocess.run([str(ROOT / "scripts/k8s"), "render", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"scan: k8s render failed:\n{proc.stdout}{proc.stderr}")
    files = sorted(out.glob("*.yaml"))
    if not files:
        raise SystemExit("scan: k8s render produced no YAML")
    return files


def match(entry, tool, check, resource):
    etool, echeck, eres, _ = entry
    return etool == tool and echeck == check and fnmatch.fnmatchcase(resource, eres)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-dir", type=pathlib.Path)
    args = parser.parse_args()
    started = time.monotonic()
    baseline = load_baseline()
    used = set()
    new, accepted, passed_total = [], 0, 0

    def judge(tool, findings):
        nonlocal accepted
        for check, resource, msg in findings:
            hits = [i for i, e in enumerate(baseline) if match(e, tool, check, resource)]
            if hits:
                used.update(hits)
                accepted += 1
            else:
                new.append((tool, check, resource, msg))

    judge("hadolint", run_hadolint(ROOT / "services/Dockerfile"))

    with tempfile.TemporaryDirectory(prefix="chat-scan-") as tmp:
        k8s_dir = args.k8s_dir or pathlib.Path(tmp) / "k8s"
        k8s_files = sorted(k8s_dir.glob("*.yaml")) if args.k8s_dir else render_k8s(k8s_dir)
        # The rendered files live in a temp dir: label them by overlay name only.
        k8s_copy = pathlib.Path(tmp) / "rendered"
        k8s_copy.mkdir()
        for f in k8s_files:
            shutil.copy(f, k8s_copy / f.name)
        runs = [
            ("dockerfile", ["--framework", "dockerfile", "-f", "services/Dockerfile"]),
            ("compose", ["--framework", "yaml", "--external-checks-dir", str(HERE / "checkov_compose"),
                         "-f", "docker-compose.yml"]),
            ("secrets", ["--framework", "secrets", "-f", "docker-compose.yml", "services/Dockerfile",
                         ".env.example", "nginx/templates/default.conf.template", "redis/redis.conf"]),
            ("k8s", ["--framework", "kubernetes", "-d", str(k8s_copy)]),
        ]
        for label, cargs in runs:
            findings, passed = run_checkov(label, cargs)
            passed_total += passed
            # Strip the temp dir from k8s resources so baseline globs stay stable.
            findings = [(c, r.replace(str(k8s_copy).lstrip("/") + "/", ""), m) for c, r, m in findings]
            judge("checkov", findings)
            print(f"scan: checkov {label}: {passed} passed, {len(findings)} failed")

    stale = [e for i, e in enumerate(baseline) if i not in used]
    for tool, check, res, _ in stale:
        print(f"scan: stale baseline entry (matches nothing): {tool} {check} {res}")
    for tool, check, res, msg in new:
        print(f"scan: NEW FINDING {tool} {check} {res}: {msg}")
    print(f"scan: {passed_total} checks passed, {accepted} findings accepted by security/baseline.yaml, "
          f"{len(new)} new, {len(stale)} stale baseline entries, {time.monotonic() - started:.0f}s")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
