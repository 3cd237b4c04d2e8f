"""One source of truth for settings: .env.example.

These tests fail when a setting is read somewhere but not documented in
.env.example, or when the README's settings table drifts from it.
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def documented_keys():
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_every_documented_key_has_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Z][A-Z0-9_]+)=", line)
        if not m:
            continue
        # Walk up through the block of keys to the comment that describes it.
        j = i - 1
        while j >= 0 and re.match(r"^#?\s*[A-Z][A-Z0-9_]+=", lines[j]):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            undocumented.append(m.group(1))
    assert undocumented == []


def test_settings_module_reads_only_documented_keys():
    settings = (ROOT / "django_app/config/settings.py").read_text()
    read = set(re.findall(r"""env(?:\.\w+)?\(\s*["']([A-Z][A-Z0-9_]+)["']""", settings))
    read |= set(re.findall(r"""environ(?:\.get)?\(\s*["']([A-Z][A-Z0-9_]+)["']""", settings))
    read |= set(re.findall(r"""environ\[\s*["']([A-Z][A-Z0-9_]+)["']\]""", settings))
    assert read, "found no environment reads in settings.py: the pattern above is stale"
    assert read - documented_keys() == set()


def test_readme_settings_table_is_generated_from_env_example():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/settings-table"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_defaults_equal_env_example():
    """docker-compose*.yml repeat each knob as ${VAR:-default}; the default must be .env.example's."""
    values = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.M))
    # The base file and the TLS overrides (docker-compose.tls.yml, docker-compose.acme.yml).
    files = sorted(ROOT.glob("docker-compose*.yml"))
    assert {f.name for f in files} >= {"docker-compose.yml", "docker-compose.tls.yml", "docker-compose.acme.yml"}
    compose = "\n".join(line for f in files for line in f.read_text().splitlines()
                        if not line.lstrip().startswith("#"))
    used = re.findall(r"\$\{([A-Z][A-Z0-9_]+):-([^}]*)\}", compose)
    assert used, "no ${VAR:-default} found in docker-compose.yml: the pattern above is stale"
    internal = {"COMPOSE_ENV_FILE"}  # which env file compose reads: not an app setting
    # Not a setting default: the mount source used when ACME_CA_BUNDLE is empty.
    mount_fallbacks = {("ACME_CA_BUNDLE", "/dev/null")}
    undocumented = sorted({name for name, _ in used} - set(values) - internal)
    assert undocumented == [], f"compose reads settings missing from .env.example: {undocumented}"
    drift = sorted({(name, default, values[name]) for name, default in used
                    if name in values and default != values[name] and (name, default) not in mount_fallbacks})
    assert drift == [], f"compose default differs from .env.example (name, compose, .env.example): {drift}"
