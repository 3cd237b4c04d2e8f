"""scripts/env (`make env`): secrets, and a compose project name per checkout (issue 17).

Two clones with the same directory name in different places must not share
containers or the Postgres volume, and an existing .env must keep the project
(and so the data volume) it already has.
"""
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # compose's rule for project names


def _checkout(where: Path) -> Path:
    """The two files scripts/env needs, laid out as in a clone."""
    (where / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "env", where / "scripts" / "env")
    shutil.copy2(ROOT / ".env.example", where / ".env.example")
    return where


def _make_env(checkout: Path) -> dict[str, str]:
    subprocess.run([str(checkout / "scripts" / "env")], check=True, capture_output=True, timeout=60)
    lines = (checkout / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_each_checkout_gets_its_own_project_name(tmp_path):
    a = _make_env(_checkout(tmp_path / "a" / "Django Channels.Stack"))
    b = _make_env(_checkout(tmp_path / "b" / "Django Channels.Stack"))
    for env in (a, b):
        assert COMPOSE_NAME.match(env["COMPOSE_PROJECT_NAME"]), env["COMPOSE_PROJECT_NAME"]
        assert env["COMPOSE_PROJECT_NAME"].startswith("django-channels-stack-")
        assert env["POSTGRES_PASSWORD"] and env["DJANGO_SECRET_KEY"] and env["REDIS_PASSWORD"]
    assert a["COMPOSE_PROJECT_NAME"] != b["COMPOSE_PROJECT_NAME"]
    assert a["POSTGRES_PASSWORD"] != b["POSTGRES_PASSWORD"]


def test_an_existing_env_keeps_its_project_and_secrets(tmp_path):
    checkout = _checkout(tmp_path / "stack")
    old = "POSTGRES_PASSWORD=kept\nDJANGO_SECRET_KEY=kept\nREDIS_PASSWORD=kept\n"
    (checkout / ".env").write_text(old)  # a .env from before: no COMPOSE_PROJECT_NAME
    env = _make_env(checkout)
    assert "COMPOSE_PROJECT_NAME" not in env, "would move an existing stack to a new, empty volume"
    assert env["POSTGRES_PASSWORD"] == "kept"
    first = _make_env(_checkout(tmp_path / "other"))
    again = _make_env(tmp_path / "other")
    assert again == first
