"""monitoring/: the Prometheus config and rules load, and every alert has a unit test.

promtool (Debian package `prometheus`, installed by scripts/deps) is the checker
Prometheus itself uses: `check config` also loads the rule files the config names,
`test rules` runs monitoring/tests/alerts_test.yml.
"""
import pathlib
import shutil
import subprocess

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MON = ROOT / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: run scripts/deps (Debian package prometheus)"
    return subprocess.run([exe, *args], cwd=MON, capture_output=True, text=True, timeout=60)


def alert_names(path: pathlib.Path) -> set[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_prometheus_config_and_rules_are_valid():
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = promtool("check", "rules", "rules.yml", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_unit_tests_pass():
    proc = promtool("test", "rules", "tests/alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test():
    tests = yaml.safe_load((MON / "tests" / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert alert_names(MON / "alerts.yml") - tested == set()


def test_alerts_name_only_jobs_prometheus_scrapes():
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"ws", "web", "nginx", "redis", "postgres", "prometheus"}
    text = (MON / "alerts.yml").read_text()
    for job in ("ws", "web", "nginx", "redis", "postgres"):
        assert f'job="{job}"' in text
    native = (ROOT / "scripts" / "local").read_text()
    for job in jobs:
        assert f"- job_name: {job}\n" in native, f"scripts/local's Prometheus lacks job {job}"


def test_a_broken_alert_fails_its_unit_test(tmp_path):
    """The unit tests can fail: the same tests against a rule with a changed threshold."""
    shutil.copytree(MON, tmp_path / "monitoring")
    alerts = tmp_path / "monitoring" / "alerts.yml"
    alerts.write_text(alerts.read_text().replace("wsworker_sockets_open > 8000", "wsworker_sockets_open > 9500"))
    exe = shutil.which("promtool")
    proc = subprocess.run([exe, "test", "rules", "tests/alerts_test.yml"], cwd=tmp_path / "monitoring",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "SocketsNearCapacity" in proc.stdout + proc.stderr
