"""The README tells an operator what `make` really does (issue 17, items 2 and 6).

The port is a setting (HTTP_BIND/HTTP_PORT): a literal 127.0.0.1:8080 may only
appear as the stated default. Wiping data is `make reset` (a Makefile target
that exists), never `make down -v`, which make swallows as its own flag.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SETTINGS_TABLE = re.compile(r"<!-- SETTINGS:BEGIN.*?<!-- SETTINGS:END -->", re.S)


def test_the_default_address_is_only_ever_named_as_the_default():
    prose = SETTINGS_TABLE.sub("", README)
    for line in prose.splitlines():
        if "127.0.0.1:8080" in line:
            assert "default" in line, f"hard-coded address where the setting is meant: {line!r}"
    assert "HTTP_PORT=" in prose, "the README must show how to change the port"


def test_data_and_volumes_are_documented_with_targets_that_exist():
    assert "**Data and volumes.**" in README
    makefile = (ROOT / "Makefile").read_text()
    for target in ("reset", "down", "createsuperuser"):
        assert re.search(rf"^{target}:", makefile, re.M), target
        assert f"make {target}" in README, target
    for flag in ("CONFIRM=yes", "RESET_ENV=yes", "DJANGO_SUPERUSER_PASSWORD"):
        assert flag in README, flag
    commands = [line for line in README.splitlines() if line.lstrip().startswith("make down -v")]
    assert commands == [], "make down -v never reaches compose: document make reset"
