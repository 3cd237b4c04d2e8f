"""A Postgres that refuses our password is named as such (issue 17, item 1).

Against the real Postgres of the unit suite: what an operator reads on /readyz
and in migrate's output when POSTGRES_PASSWORD no longer matches the data
volume, instead of a PoolTimeout.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _names_the_cause(text: str) -> None:
    assert "Postgres refused the password" in text, text
    assert "POSTGRES_PASSWORD" in text and "data volume" in text, text
    assert "make reset" in text and ".env" in text, text


def test_readyz_names_a_refused_password(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "PASSWORD", "not-the-password")
    resp = Client().get("/readyz")
    assert resp.status_code == 503
    _names_the_cause(resp.json()["checks"]["db"])


def _migrate(password: str) -> subprocess.CompletedProcess:
    # The suite's Postgres (scripts/test exports POSTGRES_HOST/PORT/USER/DB).
    # services/bin/migrate runs `python` from PATH: this venv's.
    env = {**os.environ, "POSTGRES_PASSWORD": password,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([str(REPO / "services" / "bin" / "migrate")], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_migrate_stops_at_once_with_the_cause_not_a_pool_timeout():
    proc = _migrate("not-the-password")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "chat.E001" in out, out[-3000:]
    _names_the_cause(out)
    assert "PoolTimeout" not in out and "couldn't get a connection" not in out, out[-3000:]


def test_the_check_stays_quiet_with_the_right_password():
    proc = subprocess.run([sys.executable, "manage.py", "check", "--database", "default"], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, cwd=REPO / "django_app")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chat.E001" not in proc.stdout + proc.stderr
